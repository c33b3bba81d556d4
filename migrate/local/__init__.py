"""Embedded throwaway services (PostgreSQL clusters, an S3 API server) for `demo`, tests and benchmarks."""

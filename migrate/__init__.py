"""paas-migrate: move a PaaS application's PostgreSQL database and S3 buckets into AWS, verified."""

__version__ = "0.1.0"

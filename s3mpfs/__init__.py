"""s3mpfs: a FUSE filesystem that streams writes to S3 as multipart uploads."""

__version__ = "0.1.0"

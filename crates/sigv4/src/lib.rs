//! AWS Signature Version 4 request signing (OpenSearch Service es/aoss and S3).

//! SQL over the telemetry: psql and Flight SQL clients, the lake end to end, the lake on S3, the lake as Iceberg tables, and its scale-out (many writers, many query services, one catalog).
//!
//! One test binary per area (linked once); one module per subject.

mod sql_clients;
mod sql_end_to_end;
mod sql_iceberg;
mod sql_replicas;
mod sql_s3;

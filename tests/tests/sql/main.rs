//! SQL over the telemetry: psql and Flight SQL clients, the lake end to end, and the lake on S3.
//!
//! One test binary per area (linked once); one module per subject.

mod sql_clients;
mod sql_end_to_end;
mod sql_s3;

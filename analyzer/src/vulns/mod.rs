//! Continuous vulnerability assessment and image trust.
pub mod cli;
pub mod matcher;
pub mod ocsf;
pub mod osv;
pub mod service;
pub mod trust;
pub mod version;

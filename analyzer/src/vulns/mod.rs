//! Continuous vulnerability assessment and image trust.
pub mod matcher;
pub mod ocsf;
pub mod osv;
pub mod trust;
pub mod version;

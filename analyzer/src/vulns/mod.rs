//! Continuous vulnerability assessment and image trust.
pub mod osv;
pub mod version;

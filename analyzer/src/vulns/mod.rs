//! Continuous vulnerability assessment and image trust.
pub mod version;

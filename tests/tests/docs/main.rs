//! The documentation against the code: the configuration reference is
//! rendered from the config structs' doc comments.
//!
//! One test binary per area (linked once); one module per subject.

mod config_reference;

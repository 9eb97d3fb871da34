//! The documentation against the code: the configuration reference is
//! rendered from the config structs' doc comments, and the README's
//! walk-through runs against the local stack.
//!
//! One test binary per area (linked once); one module per subject.

mod config_reference;
mod readme_walkthrough;

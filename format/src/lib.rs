//! The ilha bundle format.

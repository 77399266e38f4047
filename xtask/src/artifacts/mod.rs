//! The lab's stand-in for the internet. (Owned by the lab-artifacts work.)
pub mod cli;

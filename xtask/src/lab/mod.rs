//! Real hosts on one machine. (Owned by the lab-hosts work.)
pub mod cli;

//! `ilha restore`: etcd disaster recovery on the same masters, or objects into a new cluster.

pub mod etc_tar;
pub mod etcd;
pub mod objects;
pub mod run;

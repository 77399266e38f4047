//! `ilha backup`: a signed restore kit (etcd snapshot drilled, `/etc/kubernetes` of each master,
//! the cluster state directory, every object through the API) and scheduled snapshots on the masters.

pub mod etcd;
pub mod kit;
pub mod objects;
pub mod run;
pub mod schedule;

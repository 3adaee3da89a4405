//! The controller runtime: apiserver client, watch caches, work queue, leader election, and the executor of planned actions (to be written).

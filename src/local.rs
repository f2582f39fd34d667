//! The local backend (being written).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::localhome::{Home, read_json};

/// An instance of the local backend, as stored in `instances/<id>/instance.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceMeta {
    pub id: String,
    pub image_id: String,
    pub instance_type: String,
    /// EC2 state name: pending, running, stopping, stopped, shutting-down, terminated.
    pub state: String,
    #[serde(default)]
    pub state_reason: Option<String>,
    /// Launch time or last start, epoch seconds.
    pub launch_time: i64,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// Reads an instance's document.
pub fn read_instance(home: &Home, id: &str) -> Result<InstanceMeta> {
    read_json(&home.instance_dir(id).join("instance.json"))
}

/// Stops an instance now (lifetime expiry, `shutdown` inside the instance), killing its jobs.
pub fn force_stop(home: &Home, id: &str, reason: &str) -> Result<()> {
    let _ = (home, id, reason);
    Ok(())
}

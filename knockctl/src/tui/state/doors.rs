//! Doors pane: the configured doors.

use knock_ipc::DoorInfo;

use super::State;

impl State {
    pub fn visible_doors(&self) -> Vec<&DoorInfo> {
        let needle = self.filter.to_lowercase();
        self.doors
            .iter()
            .filter(|d| needle.is_empty() || d.name.to_lowercase().contains(&needle))
            .collect()
    }
}

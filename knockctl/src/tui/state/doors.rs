//! Doors pane: the configured doors of every host.

use knock_ipc::DoorInfo;

use super::State;

impl State {
    /// Each host's doors, in host order, with the host's index.
    pub fn visible_doors(&self) -> Vec<(usize, &DoorInfo)> {
        let lower = self.filter.to_lowercase();
        let needle = lower.as_str();
        let fleet = self.is_fleet();
        self.hosts
            .iter()
            .enumerate()
            .flat_map(|(i, h)| {
                let host_matches = fleet && h.name.to_lowercase().contains(needle);
                h.doors
                    .iter()
                    .filter(move |d| {
                        needle.is_empty() || host_matches || d.name.to_lowercase().contains(needle)
                    })
                    .map(move |d| (i, d))
            })
            .collect()
    }
}

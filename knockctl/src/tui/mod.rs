//! `knockctl tui`: a live operator dashboard for knockd.

use std::path::Path;

/// Run the dashboard against the daemon's control socket until the operator quits.
///
/// Connection and permission errors are returned before the terminal is touched.
pub async fn run(socket: &Path) -> anyhow::Result<()> {
    let _ = socket;
    anyhow::bail!("knockctl tui: not implemented yet")
}

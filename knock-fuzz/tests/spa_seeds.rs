//! The committed seeds of the `spa` fuzz target are what `knock_fuzz::spa::seeds` makes (a
//! change of the packet format shows up here); `write_spa_seeds` rewrites them.

use std::path::Path;

fn dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/spa")
}

#[test]
fn committed_spa_seeds_are_current() {
    for (name, bytes) in knock_fuzz::spa::seeds() {
        let on_disk = std::fs::read(dir().join(&name)).expect("seed file (run write_spa_seeds)");
        assert_eq!(on_disk, bytes, "fuzz/seeds/spa/{name} is stale: cargo test -p knock-fuzz --test spa_seeds -- --ignored");
        knock_fuzz::spa::check(&bytes);
    }
}

#[test]
#[ignore = "writes fuzz/seeds/spa; run by hand after a packet format change"]
fn write_spa_seeds() {
    std::fs::create_dir_all(dir()).expect("mkdir");
    for (name, bytes) in knock_fuzz::spa::seeds() {
        std::fs::write(dir().join(name), bytes).expect("write");
    }
}

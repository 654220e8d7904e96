//! `knockctl dial-stdio`: the remote end of an ssh link. It connects to the local control
//! socket and copies stdin to it and it to stdout, byte for byte, until either side closes.
//! It speaks no protocol of its own: the client at the other end of ssh does the handshake
//! and knockd applies its limits and its peer-credential check to this process, i.e. to the
//! ssh user.
//!
//! Plain threads, not tasks: a blocking read of stdin left behind would hold up the async
//! runtime's shutdown, a thread's does not hold up the process's exit.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc;

use knock_ipc::{connect_socket, ClientError};

/// Connects to `socket`, then relays until stdin or the socket ends. Connection errors are
/// knockctl's usual ones (not running, permission denied), for the caller to print: ssh
/// carries them to the console, which shows them for this host.
pub async fn dial_stdio(socket: &Path) -> Result<(), ClientError> {
    let stream = connect_socket(socket).await?;
    let connect_error = |source| ClientError::Connect {
        path: socket.to_path_buf(),
        source,
    };
    let stream = stream.into_std().map_err(connect_error)?;
    stream.set_nonblocking(false).map_err(connect_error)?;
    let to_socket = stream.try_clone().map_err(connect_error)?;
    relay(std::io::stdin(), std::io::stdout(), stream, to_socket);
    Ok(())
}

/// Copies `input` to `to_socket` and `from_socket` to `output` (flushing every chunk) on
/// two threads; returns when either copy ends, after shutting the socket down.
fn relay<I, O>(input: I, output: O, from_socket: UnixStream, to_socket: UnixStream)
where
    I: Read + Send + 'static,
    O: Write + Send + 'static,
{
    let (done, ended) = mpsc::channel();
    let shut = from_socket.try_clone();
    let up = done.clone();
    std::thread::spawn(move || {
        copy(input, to_socket);
        let _ = up.send(());
    });
    std::thread::spawn(move || {
        copy(from_socket, output);
        let _ = done.send(());
    });
    let _ = ended.recv();
    if let Ok(socket) = shut {
        let _ = socket.shutdown(std::net::Shutdown::Both);
    }
}

/// Copies until end of input or an error, flushing after each chunk (stdout is
/// line-buffered; frames are not lines).
fn copy<R: Read, W: Write>(mut from: R, mut to: W) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer tests can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn copies_both_ways_unchanged_and_ends_when_the_socket_closes() {
        let (ours, mut daemon) = UnixStream::pair().expect("pair");
        let output = Shared::default();
        let input: &'static [u8] = b"\x00\x00\x00\x03abc";
        let out = output.clone();
        let relay_thread = std::thread::spawn(move || {
            let to_socket = ours.try_clone().expect("clone");
            // Input that never ends: only the socket closing can end the relay.
            relay(input.chain(Blocked), out, ours, to_socket);
        });
        let mut got = [0u8; 7];
        daemon.read_exact(&mut got).expect("read");
        assert_eq!(&got, input);
        daemon.write_all(b"\x00\x00\x00\x01z").expect("write");
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(daemon);
        relay_thread
            .join()
            .expect("relay ends when the socket closes");
        assert_eq!(
            output.0.lock().expect("lock").as_slice(),
            b"\x00\x00\x00\x01z"
        );
    }

    /// A reader that blocks forever (a client that keeps stdin open).
    struct Blocked;

    impl Read for Blocked {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            loop {
                std::thread::park();
            }
        }
    }

    #[test]
    fn ends_when_stdin_closes() {
        let (ours, mut daemon) = UnixStream::pair().expect("pair");
        let to_socket = ours.try_clone().expect("clone");
        relay(&b"hello"[..], Shared::default(), ours, to_socket);
        let mut got = Vec::new();
        daemon
            .read_to_end(&mut got)
            .expect("read to the end: the socket was shut down");
        assert_eq!(got, b"hello");
    }
}

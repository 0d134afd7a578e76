//! One client connection: a reader that frames and dispatches requests, and a writer that sends
//! responses in request order (Kafka's rule), so many requests can be in flight at once.

use std::os::fd::AsRawFd;
use std::rc::Rc;

use futures::{AsyncRead, AsyncReadExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;

use super::write::write_all_vectored;
use super::Router;
use crate::api::{self, Dispatched, Outcome};
use crate::buffers::ChunkBuf;
use crate::protocol::codec::{self, FrameError};

/// Bytes asked of the socket per read when no large frame is expected.
const READ_CHUNK_BYTES: usize = 64 << 10;
/// Least room worth a read when no frame is under way: less moves the buffer on first.
const READ_MIN_BYTES: usize = 4 << 10;
/// Largest single read while a big frame arrives.
const READ_CHUNK_BYTES_MAX: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Counts a request as in flight until its response is written or dropped.
pub struct InFlight(Rc<Router>);

impl InFlight {
    pub fn new(router: &Rc<Router>) -> InFlight {
        router.in_flight.set(router.in_flight.get() + 1);
        InFlight(router.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.set(self.0.in_flight.get() - 1);
    }
}

pub async fn serve(router: Rc<Router>, stream: TcpStream) {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    let host: Rc<str> = Rc::from(stream.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default());
    let connection = router.connections.get();
    router.connections.set(connection + 1);
    let fd = stream.as_raw_fd();
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.split();
    let depth = router.config.broker.queued_max_requests();
    let (tx, rx) = local_channel::new_bounded(depth);
    let writer_task = glommio::spawn_local(write_loop(fd, writer, rx));
    match read_loop(&router, fd, reader, &tx, &host, connection).await {
        Ok(()) => {
            // The client closed its side or the broker is stopping: finish what was asked.
            drop(tx);
            writer_task.await;
        }
        Err(e) => {
            eprintln!("pinion: closing connection from {peer}: {e}");
            drop(writer_task); // cancels the writer; dropping the halves closes the socket
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    router: &Rc<Router>,
    fd: std::os::fd::RawFd,
    mut reader: R,
    tx: &LocalSender<(Dispatched, InFlight)>,
    host: &Rc<str>,
    connection: u64,
) -> Result<(), ConnectionError> {
    let max = router.config.broker.socket_request_max_bytes();
    let mut buf = ChunkBuf::for_connection();
    loop {
        // Room the next read needs, room to make when the buffer must move, and bytes to ask
        // the socket for. With a frame under way, the room to make is the rest of it, so that
        // it lands in one chunk, but at most as much again as has arrived (or
        // READ_CHUNK_BYTES_MAX): a declared size alone takes at most one pooled chunk.
        let (mut min, mut target, mut want) = (READ_MIN_BYTES, READ_CHUNK_BYTES / 2, READ_CHUNK_BYTES);
        while let Some(size) = codec::frame_size(buf.filled(), max)? {
            let whole = codec::SIZE_PREFIX_BYTES + size;
            if buf.len() < whole {
                let rest = whole - buf.len();
                want = rest.clamp(READ_CHUNK_BYTES, READ_CHUNK_BYTES_MAX);
                min = rest.min(READ_CHUNK_BYTES);
                target = rest.min(buf.len().max(READ_CHUNK_BYTES_MAX));
                break;
            }
            if router.stopping.get() {
                return Ok(());
            }
            buf.advance(codec::SIZE_PREFIX_BYTES);
            let frame = buf.split_to(size);
            let in_flight = InFlight::new(router);
            let dispatched = api::dispatch(router, frame, host, connection).await?;
            if tx.send((dispatched, in_flight)).await.is_err() {
                return Ok(()); // the writer failed: the socket is gone
            }
        }
        buf.reserve(min, target);
        let n = match recv_into_spare(fd, &mut buf, want) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Nothing waiting: give back a large chunk nothing else holds, and let the
                // reactor wake us.
                buf.shrink_when_idle();
                buf.reserve(min, target);
                let len = buf.spare_len().min(want);
                let n = reader.read(buf.spare_mut(len)).await?;
                buf.commit(n);
                n
            }
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Ok(());
        }
    }
}

/// Reads what the socket already holds, up to `want` bytes, without waiting: a busy
/// connection reads on without a trip through the reactor. `WouldBlock` when it is empty.
fn recv_into_spare(fd: std::os::fd::RawFd, buf: &mut ChunkBuf, want: usize) -> std::io::Result<usize> {
    let len = buf.spare_len().min(want);
    // SAFETY: the kernel writes at most `len` bytes at `spare_ptr`, which `buf` has room for.
    let n = unsafe { libc::recv(fd, buf.spare_ptr().cast(), len, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.commit(n as usize);
    Ok(n as usize)
}

async fn write_loop<W: futures::AsyncWrite + Unpin>(
    fd: std::os::fd::RawFd,
    mut writer: W,
    rx: LocalReceiver<(Dispatched, InFlight)>,
) {
    while let Some((dispatched, in_flight)) = rx.recv().await {
        let outcome = match dispatched {
            Dispatched::Now(r) => r,
            Dispatched::Later(task) => task.await,
        };
        if let Outcome::Close = outcome {
            // Wakes the reader too: the connection ends here.
            // SAFETY: shutting down our own open socket.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            return;
        }
        if let Outcome::Send(pieces) = outcome {
            if let Err(e) = write_all_vectored(fd, &mut writer, &pieces).await {
                if e.kind() != std::io::ErrorKind::BrokenPipe
                    && e.kind() != std::io::ErrorKind::ConnectionReset
                {
                    eprintln!("pinion: write failed: {e}");
                }
                return;
            }
        }
        drop(in_flight);
    }
}

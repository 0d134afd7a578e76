//! Writing a response made of many buffers with as few syscalls as possible: `sendmsg` with an
//! iovec per buffer, so stored batches go from their `Bytes` to the socket without a copy.

use std::io;
use std::os::fd::RawFd;

use bytes::Bytes;
use futures::{AsyncWrite, AsyncWriteExt};

/// Buffers handed to one `sendmsg` (Linux's IOV_MAX is 1024).
const IOVECS_MAX: usize = 1024;

/// Writes every byte of `pieces`, in order. The fast path is a non-blocking vectored send on the
/// raw socket; when the socket is full, one ordinary async write through `stream` waits for room.
pub async fn write_all_vectored<W: AsyncWrite + Unpin>(
    fd: RawFd,
    stream: &mut W,
    pieces: &[Bytes],
) -> io::Result<()> {
    let mut index = 0;
    let mut offset = 0; // bytes of pieces[index] already written
    while index < pieces.len() {
        if pieces[index].len() == offset {
            index += 1;
            offset = 0;
            continue;
        }
        match send_vectored(fd, &pieces[index..], offset) {
            Ok(written) => advance(pieces, &mut index, &mut offset, written),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let written = stream.write(&pieces[index][offset..]).await?;
                if written == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                advance(pieces, &mut index, &mut offset, written);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn advance(pieces: &[Bytes], index: &mut usize, offset: &mut usize, mut written: usize) {
    while written > 0 && *index < pieces.len() {
        let left = pieces[*index].len() - *offset;
        if written < left {
            *offset += written;
            return;
        }
        written -= left;
        *index += 1;
        *offset = 0;
    }
}

fn send_vectored(fd: RawFd, pieces: &[Bytes], offset: usize) -> io::Result<usize> {
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(pieces.len().min(IOVECS_MAX));
    for (i, p) in pieces.iter().take(IOVECS_MAX).enumerate() {
        let slice = if i == 0 { &p[offset..] } else { &p[..] };
        if !slice.is_empty() {
            iov.push(libc::iovec { iov_base: slice.as_ptr() as *mut libc::c_void, iov_len: slice.len() });
        }
    }
    // SAFETY: msghdr is plain data; every iovec points into a `Bytes` that outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len() as _;
    // SAFETY: `fd` is the connection's open socket and `msg` is valid for the call.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_walks_across_pieces() {
        let pieces = vec![Bytes::from_static(b"abc"), Bytes::from_static(b"de"), Bytes::from_static(b"f")];
        let (mut i, mut o) = (0, 0);
        advance(&pieces, &mut i, &mut o, 2);
        assert_eq!((i, o), (0, 2));
        advance(&pieces, &mut i, &mut o, 2);
        assert_eq!((i, o), (1, 1));
        advance(&pieces, &mut i, &mut o, 2);
        assert_eq!((i, o), (3, 0));
    }
}

//! Passing file descriptors over a unix socket (SCM_RIGHTS): the console master, and the
//! cgroup files a container's init writes to join its cgroup.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// Most descriptors one message carries (one per cgroup v1 hierarchy a container uses).
pub const MAX_FDS: usize = 8;

pub fn send_fd(sock: RawFd, fd: RawFd) -> nix::Result<()> {
    send_fds(sock, &[fd])
}

/// Sends one byte with `fds` attached (none is fine: the byte alone is a signal).
pub fn send_fds(sock: RawFd, fds: &[RawFd]) -> nix::Result<()> {
    let iov = [IoSlice::new(b"c")];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsg: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(sock, &iov, cmsg, MsgFlags::empty(), None).map(|_| ())
}

pub fn recv_fd(sock: RawFd) -> nix::Result<Option<OwnedFd>> {
    Ok(recv_fds(sock)?.and_then(|fds| fds.into_iter().next()))
}

/// Receives one message: `None` at end of stream, else the descriptors it carried.
pub fn recv_fds(sock: RawFd) -> nix::Result<Option<Vec<OwnedFd>>> {
    let mut buf = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut out = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just gave us these descriptors.
            out.extend(
                fds.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if msg.bytes == 0 && out.is_empty() {
        return Ok(None);
    }
    Ok(Some(out))
}

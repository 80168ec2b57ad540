//! A rootless container's network: user-mode networking by `slirp4netns` (Debian's package).
//!
//! Main type: [`UserModeNet`], the running `slirp4netns` of one container.
//!
//! Key design decision: a rootless user cannot make bridges or veths on the host, so the
//! container's namespace gets a tap device whose packets `slirp4netns` turns into ordinary
//! sockets of the user's (outbound traffic, DNS through the host's servers) and whose
//! `add_hostfwd` API binds the published ports on the host. The monitor starts it on the
//! namespace it holds while init sets up (before the command runs, so the network is there
//! from its first instruction), hands it a pipe whose closing ends it (`--exit-fd`: however
//! the monitor dies, slirp4netns goes too), and waits for its ready signal. pasta would do the
//! same with less copying, but the version Debian 12 ships cannot be pointed at a namespace
//! from inside the user namespace it belongs to.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use strata_network::model::{PortMapping, Proto};

/// A running `slirp4netns` for one container, stopped when dropped.
pub struct UserModeNet {
    child: Child,
    api: PathBuf,
    ports: Vec<PortMapping>,
    /// Closing it tells slirp4netns to exit (`--exit-fd`).
    _exit: OwnedFd,
}

impl UserModeNet {
    /// Starts slirp4netns on network namespace `netns` (a descriptor of this process), its API
    /// socket at `api`, and publishes `ports` (whose host ports the caller reserved and lets
    /// go of just before).
    pub fn start(
        netns: BorrowedFd,
        api: &Path,
        ports: &[PortMapping],
    ) -> Result<UserModeNet, String> {
        let pipe = || crate::fdpass::pipe().map_err(|e| e.to_string());
        let (ready_r, ready_w) = pipe()?;
        let (exit_r, exit_w) = pipe()?;
        let ns_path = format!("/proc/{}/fd/{}", std::process::id(), netns.as_raw_fd());
        let _ = std::fs::remove_file(api);
        let (ready_fd, exit_fd) = (ready_w.as_raw_fd(), exit_r.as_raw_fd());
        let mut cmd = Command::new("slirp4netns");
        cmd.args([
            "--configure",
            "--mtu=65520",
            "--disable-host-loopback",
            "--netns-type=path",
            "--ready-fd=3",
            "--exit-fd=4",
            "--api-socket",
        ])
        .arg(api)
        .args([ns_path.as_str(), "tap0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only dup2 between fork and exec (the duplicates lose CLOEXEC).
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(ready_fd, 3) < 0 || libc::dup2(exit_fd, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            format!("slirp4netns: {e} (rootless networking needs the slirp4netns package)")
        })?;
        drop((ready_w, exit_r));
        let mut net = UserModeNet {
            child,
            api: api.to_path_buf(),
            ports: ports.to_vec(),
            _exit: exit_w,
        };
        let mut said = [0u8; 1];
        if std::fs::File::from(ready_r).read(&mut said).unwrap_or(0) != 1 {
            let status = net.child.wait().ok();
            return Err(format!(
                "slirp4netns did not start ({status:?}): rootless networking needs /dev/net/tun \
                 usable by the user (mode 0666)"
            ));
        }
        for p in ports {
            net.forward(p)?;
        }
        Ok(net)
    }

    /// The ports it publishes.
    pub fn ports(&self) -> &[PortMapping] {
        &self.ports
    }

    /// Publishes one port through the API socket.
    fn forward(&self, p: &PortMapping) -> Result<(), String> {
        let proto = match p.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        let request = format!(
            "{{\"execute\":\"add_hostfwd\",\"arguments\":{{\"proto\":\"{proto}\",\
             \"host_addr\":\"{}\",\"host_port\":{},\"guest_port\":{}}}}}",
            p.host_ip, p.host_port, p.container_port
        );
        let failed = |e: String| format!("publish {}:{}/{proto}: {e}", p.host_ip, p.host_port);
        let mut sock = UnixStream::connect(&self.api).map_err(|e| failed(e.to_string()))?;
        sock.write_all(request.as_bytes())
            .map_err(|e| failed(e.to_string()))?;
        let _ = sock.shutdown(std::net::Shutdown::Write);
        let mut answer = String::new();
        sock.read_to_string(&mut answer)
            .map_err(|e| failed(e.to_string()))?;
        if !answer.contains("\"return\"") {
            return Err(failed(answer.trim().to_string()));
        }
        Ok(())
    }
}

impl Drop for UserModeNet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.api);
    }
}

//! The launch protocol: how a container's monitor is started and what travels on the pipes
//! between the client, the monitor and the container's init — each encoded and decoded here
//! only, so the two ends cannot drift apart.
//!
//! Main types: [`MonitorLaunch`] (the monitor's command line, `strata --root ROOT __monitor
//! ...`), [`IdMessage`] (record writer → monitor: which container, or why there is none),
//! [`Ready`] (monitor → waiting client: started, or why not) and [`InitFailure`] (init →
//! monitor: why the exec did not happen; end of file means it did).
//!
//! Key design decision: plain text on the wire (a word, a space, the rest), short and
//! allocation-light, because every message is on a container start's path; the types make
//! that text the only thing either end can write or read.

use std::os::fd::RawFd;

/// The re-exec verb that runs a container's monitor.
pub const MONITOR: &str = "__monitor";
/// The re-exec verb of `exec`'s single-threaded helper (`__exec --spec-fd N`).
pub const EXEC: &str = "__exec";

/// Which container a monitor starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One whose record exists.
    Id(String),
    /// A foreground run's, whose record the client's child writes meanwhile: an
    /// [`IdMessage`] arrives on the inherited pipe `fd` from the process `writer` (filled in
    /// after the words are made: see [`MonitorLaunch::WRITER_WORD`]). With `netns_fd`, the
    /// same process sends the container's network namespace down that socket next.
    Pipe {
        fd: RawFd,
        writer: Option<i32>,
        netns_fd: Option<RawFd>,
    },
}

/// What a monitor is started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorLaunch {
    pub target: Target,
    /// Attached to the user's terminal (`run` without -d, `start -a`, a build's RUN).
    pub foreground: bool,
    /// Where to report [`Ready`] to a waiting client.
    pub ready_fd: Option<RawFd>,
    /// A start made by the restart policy, not by a user.
    pub policy_restart: bool,
    /// `run -it`/`start -ai` on a terminal: the attach socket the client made, with the
    /// client already connected, so it sees the container's output from the first byte.
    pub attach_fd: Option<RawFd>,
}

impl MonitorLaunch {
    /// For a [`Target::Pipe`] without its writer yet: the index, in [`MonitorLaunch::words`],
    /// of the word `FD:` the writer's pid is appended to (the client writes it into a word
    /// made beforehand, so nothing allocates between its clone and its exec).
    pub const WRITER_WORD: usize = 3;

    /// The monitor of container `id`.
    pub fn of(id: &str) -> MonitorLaunch {
        MonitorLaunch {
            target: Target::Id(id.to_string()),
            foreground: false,
            ready_fd: None,
            policy_restart: false,
            attach_fd: None,
        }
    }

    /// The words after `--root ROOT`: `__monitor ID|- [--id-fd FD:PID [--netns-fd FD]]
    /// [--foreground] [--ready-fd N] [--policy-restart] [--attach-fd N]`.
    pub fn words(&self) -> Vec<String> {
        let mut w = vec![MONITOR.to_string()];
        match &self.target {
            Target::Id(id) => w.push(id.clone()),
            Target::Pipe {
                fd,
                writer,
                netns_fd,
            } => {
                w.push("-".into());
                w.push("--id-fd".into());
                w.push(match writer {
                    Some(pid) => format!("{fd}:{pid}"),
                    None => format!("{fd}:"),
                });
                if let Some(n) = netns_fd {
                    w.push("--netns-fd".into());
                    w.push(n.to_string());
                }
            }
        }
        if self.foreground {
            w.push("--foreground".into());
        }
        if let Some(fd) = self.ready_fd {
            w.push("--ready-fd".into());
            w.push(fd.to_string());
        }
        if self.policy_restart {
            w.push("--policy-restart".into());
        }
        if let Some(fd) = self.attach_fd {
            w.push("--attach-fd".into());
            w.push(fd.to_string());
        }
        w
    }

    /// The words after `--root ROOT` back (None: not a monitor's command line).
    pub fn parse(words: &[&str]) -> Option<MonitorLaunch> {
        let [verb, id, rest @ ..] = words else {
            return None;
        };
        if *verb != MONITOR {
            return None;
        }
        let mut launch = MonitorLaunch::of(id);
        let (mut id_fd, mut netns_fd) = (None, None);
        let mut it = rest.iter();
        while let Some(flag) = it.next() {
            match *flag {
                "--foreground" => launch.foreground = true,
                "--policy-restart" => launch.policy_restart = true,
                "--ready-fd" => launch.ready_fd = Some(it.next()?.parse().ok()?),
                "--attach-fd" => launch.attach_fd = Some(it.next()?.parse().ok()?),
                "--id-fd" => id_fd = Some(*it.next()?),
                "--netns-fd" => netns_fd = Some(it.next()?.parse().ok()?),
                _ => return None,
            }
        }
        if let Some(arg) = id_fd {
            let (fd, pid) = arg.split_once(':')?;
            launch.target = Target::Pipe {
                fd: fd.parse().ok()?,
                writer: Some(pid.parse().ok()?),
                netns_fd,
            };
        } else if *id == "-" || netns_fd.is_some() {
            return None;
        }
        Some(launch)
    }
}

/// Record writer → monitor, on the id pipe: the container's id, or the exit code and message
/// the run ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdMessage {
    Id(String),
    Failed(i32, String),
}

impl IdMessage {
    pub fn encode(&self) -> String {
        match self {
            IdMessage::Id(id) => format!("id {id}\n"),
            IdMessage::Failed(code, msg) => format!("{code} {}", msg.replace('\n', " ")),
        }
    }

    /// What arrived (a short read or a closed pipe: the record was not made).
    pub fn decode(msg: &str) -> IdMessage {
        if let Some(id) = msg.strip_prefix("id ").map(str::trim) {
            if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return IdMessage::Id(id.to_string());
            }
        }
        match msg.split_once(' ').map(|(c, t)| (c.parse::<i32>(), t)) {
            Some((Ok(code), text)) => IdMessage::Failed(code, text.to_string()),
            _ => IdMessage::Failed(125, "the container's record was not made".into()),
        }
    }
}

/// Monitor → waiting client, on the ready pipe: the container started (its overlay is
/// mounted), or why it did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    Started,
    /// The exit code the client leaves with (Docker's 125/126/127) and why.
    Failed(i32, String),
}

impl Ready {
    pub fn encode(&self) -> String {
        match self {
            Ready::Started => "ok".into(),
            Ready::Failed(code, msg) => format!("error {code} {msg}"),
        }
    }

    /// What arrived; nothing at all means the monitor died before it could say.
    pub fn decode(msg: &str) -> Ready {
        match msg.strip_prefix("error ") {
            Some(rest) => match rest.split_once(' ').map(|(c, m)| (c.parse(), m)) {
                Some((Ok(code), why)) => Ready::Failed(code, why.to_string()),
                _ => Ready::Failed(125, rest.to_string()),
            },
            None if msg.starts_with("ok") => Ready::Started,
            None => Ready::Failed(
                125,
                "the container monitor exited before starting the container".into(),
            ),
        }
    }
}

/// Init → monitor, on the error pipe: the exit code and message of a start that failed
/// before the exec (the pipe closes on exec, so nothing read means it happened).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitFailure {
    pub code: i32,
    pub message: String,
}

impl InitFailure {
    pub fn encode(&self) -> String {
        format!("{} {}", self.code, self.message.replace('\n', " "))
    }

    /// What arrived; None when nothing did (the exec happened). A message without its code
    /// gets `default_code`.
    pub fn decode(msg: &str, default_code: i32) -> Option<InitFailure> {
        if msg.is_empty() {
            return None;
        }
        let (code, text) = match msg.split_once(' ') {
            Some((code, text)) if code.parse::<i32>().is_ok() => {
                (code.parse().unwrap_or(125), text)
            }
            _ => (default_code, msg),
        };
        Some(InitFailure {
            code,
            message: text.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_command_lines_round_trip() {
        let launches = [
            MonitorLaunch::of(&"a".repeat(64)),
            MonitorLaunch {
                ready_fd: Some(3),
                ..MonitorLaunch::of("x1")
            },
            MonitorLaunch {
                policy_restart: true,
                attach_fd: Some(4),
                ..MonitorLaunch::of("x2")
            },
            MonitorLaunch {
                target: Target::Pipe {
                    fd: 5,
                    writer: Some(1234),
                    netns_fd: Some(6),
                },
                foreground: true,
                ready_fd: None,
                policy_restart: false,
                attach_fd: None,
            },
        ];
        for l in launches {
            let words = l.words();
            let refs: Vec<&str> = words.iter().map(String::as_str).collect();
            assert_eq!(MonitorLaunch::parse(&refs), Some(l), "{words:?}");
        }
        // The writer's pid goes after the word made for it.
        let l = MonitorLaunch {
            target: Target::Pipe {
                fd: 5,
                writer: None,
                netns_fd: None,
            },
            foreground: true,
            ready_fd: None,
            policy_restart: false,
            attach_fd: None,
        };
        let mut words = l.words();
        assert_eq!(words, ["__monitor", "-", "--id-fd", "5:", "--foreground"]);
        words[MonitorLaunch::WRITER_WORD].push_str("77");
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        assert!(matches!(
            MonitorLaunch::parse(&refs).unwrap().target,
            Target::Pipe {
                writer: Some(77),
                ..
            }
        ));
        for bad in [
            vec!["__monitor"],
            vec!["__exec", "x"],
            vec!["__monitor", "-"],
            vec!["__monitor", "x", "--nope"],
            vec!["__monitor", "-", "--id-fd", "5"],
            vec!["__monitor", "x", "--ready-fd"],
        ] {
            assert_eq!(MonitorLaunch::parse(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn messages_round_trip_and_silence_means_what_it_should() {
        let id = "f".repeat(64);
        for m in [
            IdMessage::Id(id),
            IdMessage::Failed(125, "no such image".into()),
        ] {
            assert_eq!(IdMessage::decode(&m.encode()), m);
        }
        assert_eq!(
            IdMessage::decode(""),
            IdMessage::Failed(125, "the container's record was not made".into())
        );
        for r in [Ready::Started, Ready::Failed(127, "cannot mount".into())] {
            assert_eq!(Ready::decode(&r.encode()), r);
        }
        assert!(matches!(Ready::decode(""), Ready::Failed(125, _)));
        let f = InitFailure {
            code: 127,
            message: "exec: \"x\": not found\nsecond line".into(),
        };
        assert_eq!(
            InitFailure::decode(&f.encode(), 125),
            Some(InitFailure {
                code: 127,
                message: "exec: \"x\": not found second line".into()
            })
        );
        assert_eq!(InitFailure::decode("", 125), None);
        assert_eq!(
            InitFailure::decode("no code here", 126),
            Some(InitFailure {
                code: 126,
                message: "no code here".into()
            })
        );
    }
}

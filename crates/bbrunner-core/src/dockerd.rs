//! dockerd's command line read as dockerd reads it (Go's `pflag`), for one question: does it
//! serve the Docker API on TCP without TLS client verification? Whoever reaches such a
//! listener owns the node (dind is privileged).
//!
//! What dockerd does, and what is mirrored here:
//! - `--host` / `-H` take a value: `--host=V`, `--host V`, `-H V`, `-HV`, `-H=V`, and `-H`
//!   after other one-letter boolean flags in one group (`-DH V`). They repeat; each adds a
//!   listener.
//! - A listener without a scheme is TCP (`-H :2375`, `--host=0.0.0.0:2375`); `unix://`, `fd://`
//!   and `npipe://` are not.
//! - `--tlsverify` is a boolean: `--tlsverify`, `--tlsverify=true|false|1|0|t|f|...`; the last
//!   one given wins. `--tls` alone encrypts but lets any client in, so it does not count.
//! - `--` ends the flags.
//!
//! Where this reading and dockerd's could differ (a flag unknown here that takes the next
//! word as its value), the next word is still read as a flag: that can only find a listener
//! dockerd would not open, never miss one it would.

/// One-letter dockerd flags that take no value (`-D` debug, `-v` version, `-h` help).
const BOOLEAN_SHORTHANDS: &[char] = &['D', 'v', 'h'];

/// A Docker API listener found in the arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Which argument (0-based) asked for it.
    pub index: usize,
    /// The argument as written (with its value, where that is a separate word).
    pub spelling: String,
    /// The address dockerd would listen on.
    pub address: String,
}

/// pflag's boolean values (Go's `strconv.ParseBool`).
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Whether dockerd would serve `address` over TCP.
fn is_tcp(address: &str) -> bool {
    let address = address.trim();
    match address.split_once("://") {
        Some((scheme, _)) => scheme.eq_ignore_ascii_case("tcp"),
        // dockerd reads an address without a scheme as TCP.
        None => !address.is_empty(),
    }
}

/// Every `--host` / `-H` value in `args`, in order, and whether TLS client verification is on
/// at the end (`--tlsverify`, last one wins).
fn read(args: &[String]) -> (Vec<Listener>, bool) {
    let mut listeners = Vec::new();
    let mut verify = false;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        let index = i;
        i += 1;
        if arg == "--" {
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, value) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (long, None),
            };
            match name {
                "host" => {
                    let (address, spelling) = match value {
                        Some(v) => (v.to_owned(), arg.to_owned()),
                        None => {
                            let next = args.get(i).cloned().unwrap_or_default();
                            i += 1;
                            (next.clone(), format!("{arg} {next}"))
                        }
                    };
                    listeners.push(Listener {
                        index,
                        spelling,
                        address,
                    });
                }
                "tlsverify" => {
                    // A value pflag cannot read stops dockerd; keeping the last good one is safe
                    // either way.
                    verify = value.map_or(Some(true), parse_bool).unwrap_or(verify);
                }
                _ => {}
            }
            continue;
        }
        let Some(group) = arg.strip_prefix('-').filter(|g| !g.is_empty()) else {
            continue;
        };
        // A group of one-letter flags: booleans, then possibly -H with its value.
        for (at, letter) in group.char_indices() {
            if letter == 'H' {
                let rest = &group[at + 1..];
                let rest = rest.strip_prefix('=').unwrap_or(rest);
                let (address, spelling) = if rest.is_empty() {
                    let next = args.get(i).cloned().unwrap_or_default();
                    i += 1;
                    (next.clone(), format!("{arg} {next}"))
                } else {
                    (rest.to_owned(), arg.to_owned())
                };
                listeners.push(Listener {
                    index,
                    spelling,
                    address,
                });
                break;
            }
            if !BOOLEAN_SHORTHANDS.contains(&letter) {
                // Another value flag (-l, -p, -G, ...): the rest of the group is its value.
                break;
            }
        }
    }
    (listeners, verify)
}

/// The first TCP listener dockerd would serve without TLS client verification, if any.
pub fn unverified_tcp_listener(args: &[String]) -> Option<Listener> {
    let (listeners, verify) = read(args);
    if verify {
        return None;
    }
    listeners.into_iter().find(|l| is_tcp(&l.address))
}

/// Whether a `DOCKER_HOST` value sends a Docker client to TCP (anything but a unix socket).
pub fn docker_host_is_tcp(value: &str) -> bool {
    !value.trim().starts_with("unix://")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    fn open(words: &[&str]) -> Option<String> {
        unverified_tcp_listener(&args(words)).map(|l| l.address)
    }

    #[test]
    fn every_spelling_of_a_tcp_listener_is_found() {
        for (words, address) in [
            (&["--host=tcp://0.0.0.0:2375"][..], "tcp://0.0.0.0:2375"),
            (&["--host", "tcp://0.0.0.0:2375"], "tcp://0.0.0.0:2375"),
            (&["-H", "tcp://0.0.0.0:2375"], "tcp://0.0.0.0:2375"),
            (&["-Htcp://0.0.0.0:2375"], "tcp://0.0.0.0:2375"),
            (&["-H=tcp://127.0.0.1:2375"], "tcp://127.0.0.1:2375"),
            (&["-H", ":2375"], ":2375"),
            (&["--host=0.0.0.0:2375"], "0.0.0.0:2375"),
            (&["--host", "TCP://[::]:2375"], "TCP://[::]:2375"),
            (&["-DH", "0.0.0.0:2375"], "0.0.0.0:2375"),
            (&["-DH0.0.0.0:2375"], "0.0.0.0:2375"),
            // Repeated: the TCP one among others.
            (
                &[
                    "-H",
                    "unix:///var/run/docker.sock",
                    "-H",
                    "tcp://0.0.0.0:2375",
                ],
                "tcp://0.0.0.0:2375",
            ),
            (&["-H", "fd://", "--host=:2376"], ":2376"),
        ] {
            assert_eq!(open(words).as_deref(), Some(address), "{words:?}");
        }
    }

    #[test]
    fn tls_verification_counts_only_as_the_last_word_on_it() {
        let tcp = "--host=tcp://0.0.0.0:2376";
        assert_eq!(open(&[tcp, "--tlsverify"]), None);
        assert_eq!(open(&["--tlsverify", tcp]), None);
        assert_eq!(open(&[tcp, "--tlsverify=true"]), None);
        assert_eq!(open(&[tcp, "--tlsverify=1"]), None);
        // The last one wins.
        assert!(open(&[tcp, "--tlsverify", "--tlsverify=false"]).is_some());
        assert!(open(&[tcp, "--tlsverify=0"]).is_some());
        assert_eq!(open(&[tcp, "--tlsverify=false", "--tlsverify"]), None);
        // Encryption without client verification lets anyone in.
        assert!(open(&[tcp, "--tls"]).is_some());
        assert!(open(&[tcp, "--tlsverify", "--tls=false"]).is_none());
        assert!(open(&[tcp, "--tls=true"]).is_some());
    }

    #[test]
    fn unix_sockets_fd_and_other_flags_are_not_listeners() {
        assert_eq!(open(&["--host=unix:///var/run/docker.sock"]), None);
        assert_eq!(open(&["-H", "fd://"]), None);
        assert_eq!(open(&["--debug", "--mtu=1400", "-l", "debug"]), None);
        // -l takes a value: an H in it is not a flag.
        assert_eq!(open(&["-lHigh"]), None);
        // Past `--` dockerd reads no flags.
        assert_eq!(open(&["--", "-H", "tcp://0.0.0.0:2375"]), None);
    }

    #[test]
    fn the_listener_names_the_argument_as_written() {
        let found = unverified_tcp_listener(&args(&["--debug", "-H", ":2375"])).unwrap();
        assert_eq!(found.index, 1);
        assert_eq!(found.spelling, "-H :2375");
    }

    #[test]
    fn docker_host_is_tcp_unless_a_unix_socket() {
        assert!(docker_host_is_tcp("tcp://localhost:2375"));
        assert!(docker_host_is_tcp("localhost:2375"));
        assert!(!docker_host_is_tcp("unix:///var/run/docker.sock"));
    }
}

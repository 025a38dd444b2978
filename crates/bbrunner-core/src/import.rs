//! Parse the `docker container run` command the Bitbucket UI shows (reference §1) the way users
//! really paste it: with `\` continuations or on one line, behind a `$ ` prompt, with CRLF
//! endings, quoted or not, with any extra Docker options.
//!
//! This is a small POSIX-shell word splitter (quotes, escapes, comments, continuations) followed
//! by a `docker run` option parser. It never echoes a value in an error: a mis-pasted command
//! can put the OAuth secret anywhere.

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use thiserror::Error;

use crate::ids::{AccountUuid, InvalidUuid, RepositoryUuid, RunnerUuid};
use crate::registration::{RunnerRegistration, Scope};

pub const DEFAULT_WORKING_DIRECTORY: &str = "/tmp";

/// A line and column in the pasted text, both from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ImportError {
    #[error("unterminated {quote} quote opened at {at}; close it or remove it")]
    UnterminatedQuote { quote: char, at: Position },
    #[error(
        "no `docker run` or `docker container run` command found; paste the whole command the Bitbucket UI shows when you add a runner"
    )]
    NoDockerRun,
    #[error("option {option} at {at} needs a value; complete the command")]
    MissingOptionValue { option: String, at: Position },
    #[error(
        "the command names no image after its options; paste it up to the runner image at its end"
    )]
    MissingImage,
    #[error(
        "{variable} is missing; the Bitbucket UI command always has `-e {variable}=...`, copy the whole command"
    )]
    MissingVariable { variable: &'static str },
    #[error("{variable} at {at} has no value; paste the command with its value as the UI shows it")]
    EmptyVariable {
        variable: &'static str,
        at: Position,
    },
    // Not a `source`: an error chain would print the message twice.
    #[error("{reason} (at {at})")]
    InvalidUuid { reason: InvalidUuid, at: Position },
    #[error(
        "a NUL byte at {at}: no variable value can hold one; copy the command again from the UI"
    )]
    NulByte { at: Position },
    #[error(
        "a second `docker run` command at {at}: paste one runner's command at a time (the first one would have been used silently)"
    )]
    SecondCommand { at: Position },
    #[error("OAUTH_CLIENT_ID at {at} contains white space; copy it again from the UI")]
    InvalidClientId { at: Position },
    #[error("WORKING_DIRECTORY at {at} must be an absolute path such as /tmp")]
    RelativeWorkingDirectory { at: Position },
    #[error("an -e option at {at} has no variable name before '='")]
    UnnamedVariable { at: Position },
}

/// An environment variable the command sets besides the registration's own. Values may be
/// sensitive (a proxy URL with a password), so they are held as secrets too.
#[derive(Debug, Clone)]
pub struct ExtraEnv {
    pub name: String,
    pub value: SecretString,
}

/// Everything a runner workload needs from the pasted command.
#[derive(Debug, Clone)]
pub struct ImportedCommand {
    pub registration: RunnerRegistration,
    pub runner_image: String,
    pub working_directory: String,
    /// Other `-e` variables (ENVIRONMENT, HTTP_PROXY, JAVA_OPTS, ...), in first-seen order.
    pub extra_env: Vec<ExtraEnv>,
}

/// The stable, documented output of `bbrunner import`.
#[derive(Debug, Serialize)]
pub struct ImportOutput {
    pub scope: Scope,
    pub account_uuid: AccountUuid,
    pub repository_uuid: Option<RepositoryUuid>,
    pub runner_uuid: RunnerUuid,
    pub oauth_client_id: String,
    pub oauth_client_secret: String,
    pub runner_image: String,
    pub working_directory: String,
}

pub const REDACTED: &str = "<redacted>";

impl ImportedCommand {
    /// The output record; the secret is shown only when `reveal_secret` is set.
    pub fn output(&self, reveal_secret: bool) -> ImportOutput {
        let reg = &self.registration;
        ImportOutput {
            scope: reg.scope(),
            account_uuid: reg.account_uuid.clone(),
            repository_uuid: reg.repository_uuid.clone(),
            runner_uuid: reg.runner_uuid.clone(),
            oauth_client_id: reg.oauth_client_id.clone(),
            oauth_client_secret: if reveal_secret {
                reg.oauth_client_secret.expose_secret().to_owned()
            } else {
                REDACTED.to_owned()
            },
            runner_image: self.runner_image.clone(),
            working_directory: self.working_directory.clone(),
        }
    }
}

/// Parse a pasted runner command.
pub fn parse_docker_command(input: &str) -> Result<ImportedCommand, ImportError> {
    let words = split_words(input)?;
    let args = docker_run_args(&words).ok_or(ImportError::NoDockerRun)?;
    if let Some(second) = docker_run_args(args) {
        let at = args[args.len() - second.len() - 1].at;
        return Err(ImportError::SecondCommand { at });
    }
    let parsed = parse_run_options(args)?;
    build(parsed)
}

// ---------------------------------------------------------------------------------------------
// Shell word splitting

#[derive(Debug, Clone, PartialEq, Eq)]
struct Word {
    text: String,
    at: Position,
}

struct Cursor<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    pos: Position,
}

impl Cursor<'_> {
    fn next(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.pos.line += 1;
            self.pos.column = 1;
        } else {
            self.pos.column += 1;
        }
        Some(c)
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    /// Consume spaces and one newline (or the end) if that is all that follows on this line.
    /// A `\` before trailing blanks is a continuation a user meant, even if a shell would not.
    fn eat_line_end(&mut self) -> bool {
        let rest: String = self.chars.clone().take_while(|c| *c != '\n').collect();
        if !rest.chars().all(|c| c == ' ' || c == '\t') {
            return false;
        }
        for _ in 0..rest.chars().count() {
            self.next();
        }
        self.next(); // the newline, if any
        true
    }
}

fn split_words(input: &str) -> Result<Vec<Word>, ImportError> {
    // CR never matters to us: CRLF pastes become LF, and a stray CR is white space.
    let normalised = input.replace("\r\n", "\n").replace('\r', "\n");
    let mut cur = Cursor {
        chars: normalised.chars().peekable(),
        pos: Position { line: 1, column: 1 },
    };
    let mut words = Vec::new();
    let mut word: Option<Word> = None;

    while let Some(c) = cur.peek() {
        let at = cur.pos;
        if c == '\0' {
            return Err(ImportError::NulByte { at });
        }
        match c {
            ' ' | '\t' | '\n' => {
                cur.next();
                words.extend(word.take());
            }
            '#' if word.is_none() => {
                while cur.peek().is_some_and(|c| c != '\n') {
                    cur.next();
                }
            }
            // Line continuations: POSIX `\`, PowerShell `` ` ``, cmd `^`.
            '\\' | '`' | '^' => {
                cur.next();
                if cur.eat_line_end() {
                    words.extend(word.take());
                    continue;
                }
                let w = word.get_or_insert_with(|| Word {
                    text: String::new(),
                    at,
                });
                if c == '\\' {
                    if let Some(escaped) = cur.next() {
                        w.text.push(escaped);
                    }
                } else {
                    w.text.push(c);
                }
            }
            '\'' | '"' => {
                cur.next();
                let w = word.get_or_insert_with(|| Word {
                    text: String::new(),
                    at,
                });
                loop {
                    if cur.peek() == Some('\0') {
                        return Err(ImportError::NulByte { at: cur.pos });
                    }
                    match cur.next() {
                        None => return Err(ImportError::UnterminatedQuote { quote: c, at }),
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => match cur.peek() {
                            Some('\n') => {
                                cur.next();
                            }
                            Some(e @ ('"' | '\\' | '$' | '`')) => {
                                cur.next();
                                w.text.push(e);
                            }
                            _ => w.text.push('\\'),
                        },
                        Some(other) => w.text.push(other),
                    }
                }
            }
            _ => {
                cur.next();
                word.get_or_insert_with(|| Word {
                    text: String::new(),
                    at,
                })
                .text
                .push(c);
            }
        }
    }
    words.extend(word);
    Ok(words)
}

/// The words after `docker run` / `docker container run` (or podman's), whatever precedes it
/// (a prompt, `sudo`, ...).
fn docker_run_args(words: &[Word]) -> Option<&[Word]> {
    let is_engine = |w: &Word| {
        let name = w.text.rsplit('/').next().unwrap_or(&w.text);
        name == "docker" || name == "podman"
    };
    (0..words.len()).find_map(|i| {
        if !is_engine(&words[i]) {
            return None;
        }
        let rest = &words[i + 1..];
        match rest {
            [run, tail @ ..] if run.text == "run" => Some(tail),
            [container, run, tail @ ..] if container.text == "container" && run.text == "run" => {
                Some(tail)
            }
            _ => None,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// docker run options

/// `docker run` short flags that take no value; any other short option takes one.
const BOOL_SHORT: &[char] = &['d', 'i', 't', 'P', 'q'];
/// `docker run` long flags that take no value; any other long option takes one.
const BOOL_LONG: &[&str] = &[
    "--detach",
    "--interactive",
    "--tty",
    "--rm",
    "--privileged",
    "--init",
    "--publish-all",
    "--read-only",
    "--oom-kill-disable",
    "--no-healthcheck",
    "--quiet",
    "--help",
    "--disable-content-trust",
    "--sig-proxy",
    "--use-api-socket",
];

struct EnvSetting {
    name: String,
    value: Option<String>,
    at: Position,
}

struct RunOptions {
    env: Vec<EnvSetting>,
    image: String,
}

fn parse_run_options(args: &[Word]) -> Result<RunOptions, ImportError> {
    let mut env = Vec::new();
    let mut i = 0;
    let value_after = |i: usize, option: &str, at: Position| {
        args.get(i + 1)
            .ok_or_else(|| ImportError::MissingOptionValue {
                option: option.to_owned(),
                at,
            })
    };
    while i < args.len() {
        let word = &args[i];
        let text = word.text.as_str();
        if text == "--" {
            i += 1;
            break;
        }
        if let Some(long) = text.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            let option = format!("--{name}");
            if option == "--env" {
                let (value, at) = match inline {
                    // The value starts after `--env=`.
                    Some(v) => (
                        v.to_owned(),
                        Position {
                            column: word.at.column + 6,
                            ..word.at
                        },
                    ),
                    None => {
                        let next = value_after(i, &option, word.at)?;
                        i += 1;
                        (next.text.clone(), next.at)
                    }
                };
                env.push(env_setting(&value, at)?);
            } else if inline.is_none() && !BOOL_LONG.contains(&option.as_str()) {
                value_after(i, &option, word.at)?;
                i += 1;
            }
            i += 1;
            continue;
        }
        if let Some(cluster) = text.strip_prefix('-').filter(|c| !c.is_empty()) {
            for (offset, flag) in cluster.char_indices() {
                if BOOL_SHORT.contains(&flag) {
                    continue;
                }
                let attached = &cluster[offset + flag.len_utf8()..];
                let (value, at) = if attached.is_empty() {
                    let next = value_after(i, &format!("-{flag}"), word.at)?;
                    i += 1;
                    (next.text.clone(), next.at)
                } else {
                    let column = word.at.column + 1 + offset + flag.len_utf8();
                    (attached.to_owned(), Position { column, ..word.at })
                };
                if flag == 'e' {
                    env.push(env_setting(&value, at)?);
                }
                break;
            }
            i += 1;
            continue;
        }
        break;
    }
    let image = args.get(i).ok_or(ImportError::MissingImage)?.text.clone();
    Ok(RunOptions { env, image })
}

fn env_setting(assignment: &str, at: Position) -> Result<EnvSetting, ImportError> {
    let (name, value) = match assignment.split_once('=') {
        Some((n, v)) => (n, Some(v.to_owned())),
        None => (assignment, None),
    };
    if name.is_empty() {
        return Err(ImportError::UnnamedVariable { at });
    }
    Ok(EnvSetting {
        name: name.to_owned(),
        value,
        at,
    })
}

// ---------------------------------------------------------------------------------------------
// From options to a registration

const KNOWN_VARIABLES: &[&str] = &[
    AccountUuid::VARIABLE,
    RepositoryUuid::VARIABLE,
    RunnerUuid::VARIABLE,
    "OAUTH_CLIENT_ID",
    "OAUTH_CLIENT_SECRET",
    "WORKING_DIRECTORY",
    // Always true for our workloads: the runner must check its prerequisites.
    "RUNTIME_PREREQUISITES_ENABLED",
];

fn build(parsed: RunOptions) -> Result<ImportedCommand, ImportError> {
    // As with docker itself, a variable set twice takes its last value. One pass, so that a
    // command with very many -e options stays linear.
    let last: std::collections::HashMap<&str, &EnvSetting> =
        parsed.env.iter().map(|e| (e.name.as_str(), e)).collect();
    let lookup = |name: &str| last.get(name).copied();
    let required = |variable: &'static str| -> Result<(String, Position), ImportError> {
        let setting = lookup(variable).ok_or(ImportError::MissingVariable { variable })?;
        match &setting.value {
            Some(v) if !v.is_empty() => Ok((v.clone(), setting.at)),
            _ => Err(ImportError::EmptyVariable {
                variable,
                at: setting.at,
            }),
        }
    };
    let uuid_err = |at| move |reason| ImportError::InvalidUuid { reason, at };

    let (raw, at) = required(AccountUuid::VARIABLE)?;
    let account_uuid = AccountUuid::parse(&raw).map_err(uuid_err(at))?;
    let repository_uuid = match lookup(RepositoryUuid::VARIABLE) {
        None => None,
        Some(_) => {
            let (raw, at) = required(RepositoryUuid::VARIABLE)?;
            Some(RepositoryUuid::parse(&raw).map_err(uuid_err(at))?)
        }
    };
    let (raw, at) = required(RunnerUuid::VARIABLE)?;
    let runner_uuid = RunnerUuid::parse(&raw).map_err(uuid_err(at))?;
    let (oauth_client_id, at) = required("OAUTH_CLIENT_ID")?;
    if oauth_client_id.chars().any(char::is_whitespace) {
        return Err(ImportError::InvalidClientId { at });
    }
    let (secret, _) = required("OAUTH_CLIENT_SECRET")?;

    let working_directory = match lookup("WORKING_DIRECTORY") {
        None => DEFAULT_WORKING_DIRECTORY.to_owned(),
        Some(_) => {
            let (dir, at) = required("WORKING_DIRECTORY")?;
            if !dir.starts_with('/') {
                return Err(ImportError::RelativeWorkingDirectory { at });
            }
            dir
        }
    };

    let mut extra_env: Vec<ExtraEnv> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for setting in &parsed.env {
        if KNOWN_VARIABLES.contains(&setting.name.as_str()) || !seen.insert(setting.name.as_str()) {
            continue;
        }
        // `-e NAME` alone copies the variable from the user's shell, which we cannot see.
        if let Some(value) = &lookup(&setting.name).and_then(|s| s.value.clone()) {
            extra_env.push(ExtraEnv {
                name: setting.name.clone(),
                value: SecretString::from(value.as_str()),
            });
        }
    }

    Ok(ImportedCommand {
        registration: RunnerRegistration {
            account_uuid,
            repository_uuid,
            runner_uuid,
            oauth_client_id,
            oauth_client_secret: SecretString::from(secret),
        },
        runner_image: parsed.image,
        working_directory,
        extra_env,
    })
}

#[cfg(test)]
mod tests;

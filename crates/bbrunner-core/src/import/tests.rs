use super::*;
use proptest::prelude::*;

const ACCOUNT: &str = "{0b4a1c2e-8f3d-4e5a-9b6c-7d8e9f0a1b2c}";
const REPO: &str = "{11111111-2222-4333-8444-555555555555}";
const RUNNER: &str = "{5c1d2e3f-4a5b-5c6d-8e7f-9a0b1c2d3e4f}";
const SECRET: &str = "ATOA-secret_with.special-chars_0123456789";

const UI_COMMAND: &str = r#"docker container run -it -v /tmp:/tmp -v /var/run/docker.sock:/var/run/docker.sock \
  -v /var/lib/docker/containers:/var/lib/docker/containers:ro \
  -e ACCOUNT_UUID={0b4a1c2e-8f3d-4e5a-9b6c-7d8e9f0a1b2c} \
  -e RUNNER_UUID={5c1d2e3f-4a5b-5c6d-8e7f-9a0b1c2d3e4f} \
  -e RUNTIME_PREREQUISITES_ENABLED=true \
  -e OAUTH_CLIENT_ID=AbCdEf0123456789AbCdEf0123456789 \
  -e OAUTH_CLIENT_SECRET=ATOA-secret_with.special-chars_0123456789 \
  -e WORKING_DIRECTORY=/tmp \
  --name runner-5c1d2e3f-4a5b-5c6d-8e7f-9a0b1c2d3e4f \
  docker-public.packages.atlassian.com/sox/atlassian/bitbucket-pipelines-runner:1
"#;

fn secret(cmd: &ImportedCommand) -> &str {
    cmd.registration.oauth_client_secret.expose_secret()
}

#[test]
fn parses_the_ui_command() {
    let cmd = parse_docker_command(UI_COMMAND).unwrap();
    let reg = &cmd.registration;
    assert_eq!(reg.account_uuid.braced(), ACCOUNT);
    assert_eq!(reg.runner_uuid.braced(), RUNNER);
    assert_eq!(reg.repository_uuid, None);
    assert_eq!(reg.scope(), Scope::Workspace);
    assert_eq!(reg.oauth_client_id, "AbCdEf0123456789AbCdEf0123456789");
    assert_eq!(secret(&cmd), SECRET);
    assert_eq!(
        cmd.runner_image,
        "docker-public.packages.atlassian.com/sox/atlassian/bitbucket-pipelines-runner:1"
    );
    assert_eq!(cmd.working_directory, "/tmp");
    assert!(cmd.extra_env.is_empty());
}

#[test]
fn accepts_every_paste_form() {
    let one_line = UI_COMMAND.replace("\\\n", "");
    let crlf = UI_COMMAND.replace('\n', "\r\n");
    let prompt = format!("$ {UI_COMMAND}");
    let sudo = format!("$ sudo {one_line}");
    let docker_run = UI_COMMAND.replace("docker container run", "docker run");
    let powershell = UI_COMMAND.replace("\\\n", "`\n");
    let trailing_blank = UI_COMMAND.replace("\\\n", "\\  \n");
    for input in [
        UI_COMMAND.to_owned(),
        one_line,
        crlf,
        prompt,
        sudo,
        docker_run,
        powershell,
        trailing_blank,
    ] {
        let cmd = parse_docker_command(&input).unwrap_or_else(|e| panic!("{e}\n{input}"));
        assert_eq!(cmd.registration.runner_uuid.braced(), RUNNER, "{input}");
        assert_eq!(secret(&cmd), SECRET, "{input}");
        assert!(cmd.runner_image.ends_with("runner:1"), "{input}");
    }
}

#[test]
fn env_option_forms_and_values_with_punctuation() {
    let input = format!(
        "docker run -d --restart unless-stopped --rm -e 'ACCOUNT_UUID={ACCOUNT}' \
         --env \"RUNNER_UUID={RUNNER}\" --env=OAUTH_CLIENT_ID=id+with/odd=chars \
         -eOAUTH_CLIENT_SECRET=a=b-c_d.e+f/g= -itd -e REPOSITORY_UUID={REPO} \
         -e \"JAVA_OPTS=-Xmx1g -Xms512m\" --network=host -p 8080:80 my/runner:6.1.0 --some-arg"
    );
    let cmd = parse_docker_command(&input).unwrap();
    let reg = &cmd.registration;
    assert_eq!(reg.oauth_client_id, "id+with/odd=chars");
    assert_eq!(secret(&cmd), "a=b-c_d.e+f/g=");
    assert_eq!(reg.repository_uuid.as_ref().unwrap().braced(), REPO);
    assert_eq!(reg.scope(), Scope::Repository);
    assert_eq!(cmd.runner_image, "my/runner:6.1.0");
    assert_eq!(cmd.extra_env.len(), 1);
    assert_eq!(cmd.extra_env[0].name, "JAVA_OPTS");
    assert_eq!(cmd.extra_env[0].value.expose_secret(), "-Xmx1g -Xms512m");
}

#[test]
fn last_setting_wins_and_comments_are_ignored() {
    let input = UI_COMMAND.replace(
        "-e WORKING_DIRECTORY=/tmp \\",
        "-e WORKING_DIRECTORY=/tmp # a note \n -e WORKING_DIRECTORY=/work -e HTTP_PROXY=http://u:p@proxy:3128 \\",
    );
    let cmd = parse_docker_command(&input).unwrap();
    assert_eq!(cmd.working_directory, "/work");
    assert_eq!(cmd.extra_env[0].name, "HTTP_PROXY");
}

#[test]
fn uuids_are_normalised() {
    let input = UI_COMMAND.replace(
        "{5c1d2e3f-4a5b-5c6d-8e7f-9a0b1c2d3e4f} \\",
        "5C1D2E3F-4A5B-5C6D-8E7F-9A0B1C2D3E4F \\",
    );
    let cmd = parse_docker_command(&input).unwrap();
    assert_eq!(cmd.registration.runner_uuid.braced(), RUNNER);
}

#[test]
fn output_redacts_unless_revealed() {
    let cmd = parse_docker_command(UI_COMMAND).unwrap();
    let hidden = serde_json::to_value(cmd.output(false)).unwrap();
    assert_eq!(hidden["oauth_client_secret"], REDACTED);
    assert_eq!(hidden["scope"], "workspace");
    assert_eq!(hidden["repository_uuid"], serde_json::Value::Null);
    let keys: Vec<&String> = hidden.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "account_uuid",
            "oauth_client_id",
            "oauth_client_secret",
            "repository_uuid",
            "runner_image",
            "runner_uuid",
            "scope",
            "working_directory"
        ]
    );
    let shown = serde_json::to_value(cmd.output(true)).unwrap();
    assert_eq!(shown["oauth_client_secret"], SECRET);
}

fn err(input: &str) -> ImportError {
    parse_docker_command(input).unwrap_err()
}

#[test]
fn each_missing_variable_is_named() {
    for variable in [
        "ACCOUNT_UUID",
        "RUNNER_UUID",
        "OAUTH_CLIENT_ID",
        "OAUTH_CLIENT_SECRET",
    ] {
        let input: String = UI_COMMAND
            .lines()
            .filter(|l| !l.contains(&format!("{variable}=")))
            .collect::<Vec<_>>()
            .join("\n");
        let e = err(&input);
        assert_eq!(e, ImportError::MissingVariable { variable });
        assert!(e.to_string().starts_with(&format!("{variable} is missing")));
    }
}

#[test]
fn empty_and_valueless_variables_are_named_with_position() {
    let e = err(&UI_COMMAND.replace(
        &format!("OAUTH_CLIENT_SECRET={SECRET}"),
        "OAUTH_CLIENT_SECRET=",
    ));
    assert_eq!(
        e,
        ImportError::EmptyVariable {
            variable: "OAUTH_CLIENT_SECRET",
            at: Position { line: 7, column: 6 }
        }
    );
    let e = err(&UI_COMMAND.replace(
        &format!("OAUTH_CLIENT_SECRET={SECRET}"),
        "OAUTH_CLIENT_SECRET",
    ));
    assert!(matches!(
        e,
        ImportError::EmptyVariable {
            variable: "OAUTH_CLIENT_SECRET",
            ..
        }
    ));
}

#[test]
fn malformed_uuid_names_the_variable_and_never_the_value() {
    let e = err(&UI_COMMAND.replace(ACCOUNT, "{0b4a1c2e-8f3d-4e5a-9b6c}"));
    let msg = e.to_string();
    assert!(msg.starts_with("ACCOUNT_UUID is not a UUID"), "{msg}");
    assert!(msg.contains("line 3, column 6"), "{msg}");
    assert!(!msg.contains("0b4a1c2e"), "{msg}");

    // A secret pasted into a UUID slot must not be echoed.
    let e = err(&UI_COMMAND.replace(RUNNER, SECRET));
    assert!(e.to_string().starts_with("RUNNER_UUID is not a UUID"));
    assert!(!e.to_string().contains(SECRET));
}

#[test]
fn unterminated_quote_gives_its_position_and_hides_the_rest() {
    let e = err(&UI_COMMAND.replace(
        &format!("-e OAUTH_CLIENT_SECRET={SECRET}"),
        &format!("-e \"OAUTH_CLIENT_SECRET={SECRET}"),
    ));
    assert_eq!(
        e,
        ImportError::UnterminatedQuote {
            quote: '"',
            at: Position { line: 7, column: 6 }
        }
    );
    assert!(!e.to_string().contains(SECRET));
    let e = err("docker run -e 'A=b");
    assert!(
        e.to_string()
            .contains("unterminated ' quote opened at line 1, column 15")
    );
}

#[test]
fn other_bad_inputs() {
    assert_eq!(err(""), ImportError::NoDockerRun);
    assert_eq!(err("docker pull image"), ImportError::NoDockerRun);
    assert_eq!(err("kubectl run foo --image=x"), ImportError::NoDockerRun);
    assert!(matches!(
        err("docker run -e"),
        ImportError::MissingOptionValue { ref option, .. } if option == "-e"
    ));
    assert!(matches!(
        err("docker run --name"),
        ImportError::MissingOptionValue { ref option, .. } if option == "--name"
    ));
    let no_image = UI_COMMAND
        .lines()
        .filter(|l| !l.contains("bitbucket-pipelines-runner"))
        .collect::<Vec<_>>()
        .join("\n");
    let no_image = no_image
        .trim_end_matches('\\')
        .trim_end()
        .trim_end_matches('\\');
    // `--name runner-...` now eats nothing else, so no image remains.
    assert_eq!(err(no_image), ImportError::MissingImage);
    assert!(matches!(
        err(&UI_COMMAND.replace("WORKING_DIRECTORY=/tmp", "WORKING_DIRECTORY=tmp")),
        ImportError::RelativeWorkingDirectory { .. }
    ));
    assert!(matches!(
        err(&UI_COMMAND.replace("OAUTH_CLIENT_ID=AbCd", "\"OAUTH_CLIENT_ID=Ab Cd\"")),
        ImportError::InvalidClientId { .. }
    ));
    assert!(matches!(
        err("docker run -e =x image"),
        ImportError::UnnamedVariable { .. }
    ));
}

// ---------------------------------------------------------------------------------------------
// Property: any registration, printed the way users paste it, parses back equal.

fn uuid() -> impl Strategy<Value = String> {
    "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
}

#[derive(Debug, Clone)]
struct Generated {
    account: String,
    repository: Option<String>,
    runner: String,
    client_id: String,
    secret: String,
    image: String,
}

fn generated() -> impl Strategy<Value = Generated> {
    (
        uuid(),
        proptest::option::of(uuid()),
        uuid(),
        "[A-Za-z0-9]{20,40}",
        "ATOA[A-Za-z0-9._+/=-]{10,60}",
        "[a-z0-9./-]{1,30}(:[a-z0-9.]{1,8})?",
    )
        .prop_map(
            |(account, repository, runner, client_id, secret, image)| Generated {
                account,
                repository,
                runner,
                client_id,
                secret,
                image: format!("x{image}"),
            },
        )
}

/// Quote a `K=V` assignment in one of the ways users write it.
fn quoted(style: u8, assignment: &str) -> String {
    match style % 3 {
        0 => assignment.to_owned(),
        1 => format!("\"{assignment}\""),
        _ => format!("'{assignment}'"),
    }
}

fn env_option(style: u8, assignment: &str) -> String {
    match style % 3 {
        0 => format!("-e {}", quoted(style / 3, assignment)),
        1 => format!("--env {}", quoted(style / 3, assignment)),
        _ => format!("--env={}", quoted(style / 3, assignment)),
    }
}

const NOISE: &[&str] = &[
    "-d",
    "-it",
    "--rm",
    "--restart unless-stopped",
    "-v /tmp:/tmp",
    "-v /var/run/docker.sock:/var/run/docker.sock",
    "--name runner-x",
    "--pull=always",
    "-e RUNTIME_PREREQUISITES_ENABLED=true",
    "-e WORKING_DIRECTORY=/tmp",
];

fn render(g: &Generated, styles: &[u8], noise: &[usize], joiner: u8, head: u8) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut assignments = vec![
        format!("ACCOUNT_UUID={{{}}}", g.account),
        format!("RUNNER_UUID={}", g.runner),
        format!("OAUTH_CLIENT_ID={}", g.client_id),
        format!("OAUTH_CLIENT_SECRET={}", g.secret),
    ];
    if let Some(repo) = &g.repository {
        assignments.push(format!("REPOSITORY_UUID={{{repo}}}"));
    }
    for (i, a) in assignments.iter().enumerate() {
        parts.push(env_option(styles[i % styles.len()], a));
        if let Some(n) = noise.get(i) {
            parts.push(NOISE[*n % NOISE.len()].to_owned());
        }
    }
    parts.push(g.image.clone());
    let joiner = match joiner % 4 {
        0 => " ",
        1 => " \\\n  ",
        2 => " \\\r\n  ",
        _ => "\t",
    };
    let head = match head % 4 {
        0 => "docker run",
        1 => "docker container run",
        2 => "$ docker container run",
        _ => "sudo docker run",
    };
    format!("{head}{joiner}{}\n", parts.join(joiner))
}

proptest! {
    #[test]
    fn printed_commands_parse_back_equal(
        g in generated(),
        styles in proptest::collection::vec(0u8..9, 1..6),
        noise in proptest::collection::vec(0usize..100, 0..6),
        joiner in 0u8..4,
        head in 0u8..4,
    ) {
        let input = render(&g, &styles, &noise, joiner, head);
        let cmd = parse_docker_command(&input).map_err(|e| TestCaseError::fail(format!("{e}\n{input}")))?;
        let reg = &cmd.registration;
        prop_assert_eq!(reg.account_uuid.braced(), format!("{{{}}}", g.account.to_lowercase()));
        prop_assert_eq!(reg.runner_uuid.braced(), format!("{{{}}}", g.runner.to_lowercase()));
        prop_assert_eq!(
            reg.repository_uuid.as_ref().map(|r| r.braced().to_owned()),
            g.repository.as_ref().map(|r| format!("{{{}}}", r.to_lowercase()))
        );
        prop_assert_eq!(&reg.oauth_client_id, &g.client_id);
        prop_assert_eq!(reg.oauth_client_secret.expose_secret(), g.secret.as_str());
        prop_assert_eq!(&cmd.runner_image, &g.image);
    }

    #[test]
    fn arbitrary_input_never_panics_nor_leaks(input in "\\PC{0,200}") {
        if let Err(e) = parse_docker_command(&input) {
            let _ = e.to_string();
        }
    }
}

#[test]
fn nul_bytes_and_a_second_command_are_refused_with_their_position() {
    let with_nul = UI_COMMAND.replace(SECRET, "ATOA-sec\0ret");
    match err(&with_nul) {
        ImportError::NulByte { at } => assert_eq!((at.line, at.column), (7, 34), "{at}"),
        other => panic!("{other:?}"),
    }
    let quoted_nul = UI_COMMAND.replace(SECRET, "\"ATOA\0\"");
    assert!(matches!(err(&quoted_nul), ImportError::NulByte { .. }));
    let twice = format!("{UI_COMMAND}\n{UI_COMMAND}");
    match err(&twice) {
        ImportError::SecondCommand { at } => assert!(at.line > 10, "{at}"),
        other => panic!("{other:?}"),
    }
    assert!(!format!("{}", err(&twice)).contains(SECRET));
}

#[test]
fn a_malformed_uuid_is_described_once() {
    let bad = UI_COMMAND.replace(ACCOUNT, "{not-a-uuid}");
    let e = err(&bad);
    // The whole chain, as the CLI prints it with `{:#}`.
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        chain.push_str(&format!(": {s}"));
        source = s.source();
    }
    assert_eq!(chain.matches("is not a UUID").count(), 1, "{chain}");
}

#[test]
fn many_variables_keep_their_first_order_and_last_value() {
    // Tens of thousands of -e options: the extra variables are collected in one pass.
    let mut command = UI_COMMAND.replace(" \\\n  --name", "");
    let extra: String = (0..50_000)
        .map(|i| format!(" -e V{}={i}", i % 25_000))
        .collect();
    command = command.replacen("-e ACCOUNT_UUID", &format!("{extra} -e ACCOUNT_UUID"), 1);
    let cmd = parse_docker_command(&command).unwrap();
    assert_eq!(cmd.extra_env.len(), 25_000);
    assert_eq!(cmd.extra_env[0].name, "V0");
    assert_eq!(cmd.extra_env[0].value.expose_secret(), "25000");
    assert_eq!(cmd.extra_env[24_999].name, "V24999");
}

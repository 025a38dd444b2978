//! What an image's tag says of the Docker inside it: floating tags, the Docker major, and the
//! warnings that follow for the step networks' MTU and older Docker clients.

use super::*;

/// Whether an image tag floats to new Docker majors (and so breaks runners without notice).
pub fn is_floating_dind_tag(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        None => true,
        Some((_, tag)) => matches!(
            tag,
            "latest" | "dind" | "dind-rootless" | "rc" | "rc-dind" | "test" | "stable"
        ),
    }
}

/// The Docker major of a `docker:<tag>` image, when the tag says.
pub fn docker_major(image: &str) -> Option<u32> {
    let last = image.rsplit('/').next()?;
    let tag = last.split_once(':')?.1;
    tag.split(['.', '-']).next()?.parse().ok()
}

/// The first Docker whose dockerd takes `--default-network-opt`, the only way the user-defined
/// networks the runner puts each step on follow the pod's MTU.
pub const DOCKER_NETWORK_OPTS_SINCE: u32 = 24;

/// Why steps on this dind image get a larger MTU than `mtu`, when its tag says so: the
/// warning `render`, the operator, `doctor` and `lint` give. The daemon itself decides at
/// start by testing the flag; this reads the tag only to warn before anything runs.
pub fn dind_networks_mtu_warning(image: &str, mtu: Mtu) -> Option<String> {
    let major = docker_major(image)?;
    if major >= DOCKER_NETWORK_OPTS_SINCE || mtu == Mtu::Fixed(1500) {
        return None;
    }
    let pod = match mtu {
        Mtu::Auto => "the pod network's MTU".to_owned(),
        Mtu::Fixed(n) => format!("MTU {n}"),
    };
    Some(format!(
        "{image} is Docker {major}, whose dockerd has no --default-network-opt (it came in Docker {DOCKER_NETWORK_OPTS_SINCE}): only docker0 follows {pod}, while the user-defined network the runner puts each step on keeps 1500, so downloads and TLS in steps can hang. Use a dind image of Docker {DOCKER_NETWORK_OPTS_SINCE} or later (default {DEFAULT_DIND_IMAGE}); if the nodes need Docker 20.10 (the OOM-score error), set memory requests instead, which bbrunner does by default"
    ))
}

/// Docker 29 refuses clients older than API 1.44, which older runner images ship.
pub fn dind_client_api_warning(image: &str) -> Option<String> {
    docker_major(image).filter(|m| *m >= 29).map(|_| {
        format!(
            "{image} refuses Docker clients older than API 1.44, which older runner images ship; use {DEFAULT_DIND_IMAGE} until your runner image is current"
        )
    })
}

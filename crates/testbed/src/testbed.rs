//! fake-bitbucket beside a cluster whose runner pods register with it: the world of most
//! tests, started once per test with typed handles and cleaned up on drop.

use std::ops::Deref;

use fake_bitbucket::{FakeBitbucket, FakeConfig};
use fake_kube::ClusterConfig;

use crate::cluster::Cluster;
use crate::control_plane::Options;

pub struct Testbed {
    pub bitbucket: FakeBitbucket,
    pub cluster: Cluster,
}

impl Deref for Testbed {
    type Target = Cluster;

    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

/// fake-bitbucket as `config` asks.
async fn bitbucket(config: FakeConfig) -> FakeBitbucket {
    FakeBitbucket::start(config)
        .await
        .expect("fake-bitbucket starts")
}

impl Testbed {
    /// fake-bitbucket and fake-kube, shaped by `configure`.
    pub async fn fake(
        name: &str,
        config: FakeConfig,
        configure: impl FnOnce(&mut ClusterConfig),
    ) -> Self {
        let bitbucket = bitbucket(config).await;
        let mut cluster = ClusterConfig {
            bitbucket_url: Some(bitbucket.url().to_owned()),
            ..ClusterConfig::default()
        };
        configure(&mut cluster);
        let cluster = Cluster::fake(name, cluster).await;
        Self { bitbucket, cluster }
    }

    /// fake-bitbucket and a real control plane of the test's own; `None` where its binaries
    /// are missing (see [`crate::cluster::real_binaries`]).
    pub async fn real(
        name: &str,
        config: FakeConfig,
        configure: impl FnOnce(&mut Options),
    ) -> Option<Self> {
        let bitbucket = bitbucket(config).await;
        let url = bitbucket.url().to_owned();
        let cluster = Cluster::real(name, |options| {
            options.bitbucket_url = Some(url);
            configure(options);
        })
        .await?;
        Some(Self { bitbucket, cluster })
    }
}

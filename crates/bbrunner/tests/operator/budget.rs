//! One API identity's request budget, shared fairly between its pools: a pool asking to poll
//! every second gets its identity's fair share, and the others go on.

use super::*;

/// Two pools on one Secret, one of them polling every second. On fake-bitbucket's clock (30
/// times real time) with a budget of 200 requests an hour, a 1 s poll alone would spend it in
/// about three minutes and leave both pools RateLimited until the hour ends. Instead the fast
/// pool polls every 30 s (its identity's fair share: three fifths of 200 lists an hour), says
/// so in its status and metrics, and the other pool gets its five runners; neither is ever
/// RateLimited.
#[tokio::test(flavor = "multi_thread")]
async fn a_pool_with_a_fast_poll_gets_its_fair_share_and_starves_no_one() {
    let world = World::start("fair-share").await;
    let origin = world.bitbucket.with_world(|w, _| w.epoch).to_string();
    let metrics = free_local_addr();
    let _op = world.operator(&[
        "--time-scale",
        "30",
        "--clock-origin",
        &origin,
        "--budget",
        "200",
        "--metrics-addr",
        &metrics,
    ]);
    let mut fast = managed(1, 1);
    fast["labels"] = json!(["fast"]);
    fast["scaling"]["pollInterval"] = json!("1s");
    fast["scaling"]["minIdle"] = json!(0);
    world.pool("fast", fast).await;
    let mut builds = managed(5, 5);
    builds["scaling"]["pollInterval"] = json!("15s");
    builds["scaling"]["minIdle"] = json!(0);
    world.pool("builds", builds).await;
    let rate_limited = || async {
        for pool in ["fast", "builds"] {
            if world
                .has_condition(pool, "Degraded", "True", "RateLimited", "")
                .await
            {
                return Some(pool);
            }
        }
        None
    };
    // Half an hour on the fake's clock: past the three minutes a 1 s poll would take to spend
    // the hour's budget, and long enough for the five runners.
    let until = Instant::now() + Duration::from_secs(60);
    let mut five_at = None;
    while Instant::now() < until {
        if let Some(pool) = rate_limited().await {
            panic!("pool {pool} RateLimited: the budget was not shared");
        }
        let online = world
            .runners()
            .iter()
            .filter(|r| r["state"] == "ONLINE" && r["name"].as_str().unwrap().contains(".builds."))
            .count();
        if online == 5 && five_at.is_none() {
            five_at = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        five_at.is_some(),
        "the other pool never got its five runners"
    );
    assert_eq!(
        world.status("fast").await["pollIntervalInEffect"],
        "30s",
        "the fast pool's share is not in its status"
    );
    assert_eq!(world.status("builds").await["pollIntervalInEffect"], "30s");
    let scraped = scrape(&metrics).await;
    assert!(
        scraped.contains(r#"bbrunner_poll_interval_seconds{namespace="ci",pool="fast"} 30.0"#),
        "{}",
        scraped
            .lines()
            .filter(|l| l.contains("poll_interval"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

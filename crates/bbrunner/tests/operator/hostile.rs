//! Hostile pod templates: keys of the operator's own bookkeeping (a pod's pool, runner,
//! template revision, whether it ran a step) set by a pool's author.

use super::*;

/// Refused at admission by the CRD's rules, and by the operator for a pool stored before them
/// (Degraded naming the field and the key, no runner, no pod).
async fn reserved_keys_are_refused_at_admission_and_by_the_operator(world: &World) {
    let templates = [
        (
            "labels",
            json!({"labels": {"team": "web", "bbrunner.dev/pool": "someone-else"}}),
        ),
        (
            "annotations",
            json!({"annotations": {"ci.bbrunner.dev/ran-step": "true"}}),
        ),
    ];
    let pool = |name: &str, template: &Value| -> DynamicObject {
        let mut spec = managed(1, 1);
        spec["podTemplate"] = template.clone();
        serde_json::from_value(
            json!({"apiVersion": "bbrunner.dev/v1alpha1", "kind": "RunnerPool",
            "metadata": {"name": name}, "spec": spec}),
        )
        .unwrap()
    };
    for (field, template) in &templates {
        let refused = world
            .pools()
            .create(
                &PostParams::default(),
                &pool(&format!("own-{field}"), template),
            )
            .await
            .expect_err("refused at admission");
        let kube::Error::Api(status) = refused else {
            panic!("{refused}")
        };
        assert_eq!(status.code, 422, "{}", status.message);
        assert!(
            status
                .message
                .contains(&format!("spec.podTemplate.{field}"))
                && status.message.contains("bbrunner.dev/"),
            "{}",
            status.message
        );
    }
    // Keys of other domains pass.
    world
        .pools()
        .create(
            &PostParams::default(),
            &pool(
                "fine",
                &json!({"labels": {"bbrunner.dev.example.com/x": "1"}}),
            ),
        )
        .await
        .unwrap();
    world.delete_pool("fine").await;

    // Stored before the rules existed: the operator refuses them itself.
    world
        .loosen_crd(|schema| {
            let template = &mut schema["properties"]["spec"]["properties"]["podTemplate"];
            for field in ["labels", "annotations"] {
                template["properties"][field]
                    .as_object_mut()
                    .unwrap()
                    .remove("x-kubernetes-validations");
            }
        })
        .await;
    for (field, template) in &templates {
        world
            .pools()
            .create(
                &PostParams::default(),
                &pool(&format!("own-{field}"), template),
            )
            .await
            .unwrap();
    }
    let _op = world.operator(&[]);
    for (field, key) in [
        ("labels", "bbrunner.dev/pool"),
        ("annotations", "ci.bbrunner.dev/ran-step"),
    ] {
        let name = format!("own-{field}");
        eventually(&format!("{name} Degraded naming {key}"), 30, || async {
            world
                .has_condition(
                    &name,
                    "Degraded",
                    "True",
                    "InvalidSpec",
                    &format!("spec.podTemplate.{field} has \"{key}\""),
                )
                .await
        })
        .await;
    }
    assert!(world.pods().await.is_empty(), "no pod runs");
    assert!(world.runners().is_empty(), "no runner is created");
}

#[tokio::test(flavor = "multi_thread")]
async fn reserved_keys_in_the_pod_template_are_refused_on_fake_kube() {
    let world = World::start("reserved-keys").await;
    reserved_keys_are_refused_at_admission_and_by_the_operator(&world).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reserved_keys_in_the_pod_template_are_refused_on_a_real_control_plane() {
    let Some(world) = World::real("real-reserved-keys").await else {
        return;
    };
    reserved_keys_are_refused_at_admission_and_by_the_operator(&world).await;
}

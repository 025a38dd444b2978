"""Drives a Kubernetes API server with the official Python client the way Atlassian's
runners-autoscaler does: one Secret and one batch/v1 Job per runner, watched, listed and
deleted. Used by crates/bbrunner/tests/cli/live.rs against fake-kube.

Usage: autoscaler_like.py create|delete, with KUBECONFIG, NAMESPACE and, for create,
ACCOUNT_UUID, RUNNER_UUID, OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET in the environment.
"""

import base64
import os
import sys

from kubernetes import client, config, watch

NAMESPACE = os.environ["NAMESPACE"]


def b64(value):
    return base64.b64encode(value.encode()).decode()


def names():
    bare = os.environ["RUNNER_UUID"].strip("{}")
    return f"runner-oauth-credentials-{bare}", f"runner-{bare}"


def create(core, batch):
    secret_name, job_name = names()
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
    keys = {
        "account_uuid": "ACCOUNT_UUID",
        "runner_uuid": "RUNNER_UUID",
        "oauth_client_id": "OAUTH_CLIENT_ID",
        "oauth_client_secret": "OAUTH_CLIENT_SECRET",
    }
    core.create_namespaced_secret(
        NAMESPACE,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=secret_name),
            data={key: b64(os.environ[var]) for key, var in keys.items()},
        ),
    )
    env = [
        client.V1EnvVar(
            name=var,
            value_from=client.V1EnvVarSource(
                secret_key_ref=client.V1SecretKeySelector(name=secret_name, key=key)
            ),
        )
        for key, var in keys.items()
    ] + [client.V1EnvVar(name="WORKING_DIRECTORY", value="/tmp")]
    mounts = [
        client.V1VolumeMount(name="tmp", mount_path="/tmp"),
        client.V1VolumeMount(name="var-run", mount_path="/var/run"),
    ]
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name=job_name),
        spec=client.V1JobSpec(
            backoff_limit=6,
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(
                    restart_policy="OnFailure",
                    containers=[
                        client.V1Container(
                            name="runner",
                            image="docker-public.packages.atlassian.com/sox/atlassian/bitbucket-pipelines-runner:1",
                            env=env,
                            volume_mounts=mounts,
                        ),
                        client.V1Container(
                            name="docker",
                            image="docker:28.5-dind",
                            security_context=client.V1SecurityContext(privileged=True),
                            volume_mounts=mounts,
                        ),
                    ],
                    volumes=[
                        client.V1Volume(name="tmp", empty_dir=client.V1EmptyDirVolumeSource()),
                        client.V1Volume(name="var-run", empty_dir=client.V1EmptyDirVolumeSource()),
                    ],
                )
            ),
        ),
    )
    batch.create_namespaced_job(NAMESPACE, job)

    # Watch the Job's pod until it runs.
    stream = watch.Watch()
    running = None
    for event in stream.stream(
        core.list_namespaced_pod,
        NAMESPACE,
        label_selector=f"job-name={job_name}",
        timeout_seconds=30,
    ):
        pod = event["object"]
        if pod.status and pod.status.phase == "Running":
            running = pod.metadata.name
            stream.stop()
    assert running, "the Job's pod never ran"

    # List as the autoscaler does, into the client's typed models.
    assert secret_name in [s.metadata.name for s in core.list_namespaced_secret(NAMESPACE).items]
    jobs = batch.list_namespaced_job(NAMESPACE).items
    assert [j.metadata.name for j in jobs] == [job_name], jobs
    assert jobs[0].status.active == 1, jobs[0].status
    assert jobs[0].spec.selector.match_labels, jobs[0].spec.selector
    pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={job_name}").items
    assert pods[0].metadata.owner_references[0].kind == "Job"
    print(f"RUNNING {running}")


def delete(core, batch):
    secret_name, job_name = names()
    batch.delete_namespaced_job(job_name, NAMESPACE, propagation_policy="Background")
    core.delete_namespaced_secret(secret_name, NAMESPACE)
    stream = watch.Watch()
    for _ in stream.stream(
        core.list_namespaced_pod,
        NAMESPACE,
        label_selector=f"job-name={job_name}",
        timeout_seconds=5,
    ):
        if not core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={job_name}").items:
            stream.stop()
    assert not core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={job_name}").items
    assert not batch.list_namespaced_job(NAMESPACE).items
    assert secret_name not in [s.metadata.name for s in core.list_namespaced_secret(NAMESPACE).items]
    print("DELETED")


def main():
    config.load_kube_config(os.environ["KUBECONFIG"])
    core, batch = client.CoreV1Api(), client.BatchV1Api()
    {"create": create, "delete": delete}[sys.argv[1]](core, batch)


if __name__ == "__main__":
    main()

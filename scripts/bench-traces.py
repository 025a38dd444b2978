#!/usr/bin/env python3
"""Writes the traces BENCHMARKS.md measures beside the built-in scenarios, shaped unlike them:
four weeks each (a pool learns its forecast from its own past, so the first weeks are in the
figures too), JSON Lines as `bbrunner simulate --trace` reads them.

  bursty    six fan-outs of 4 to 8 steps a day at random times, and one pipeline an hour
  periodic  a 4-step pipeline on the hour, every hour, as a cron schedule makes them
  quiet     three 1- or 2-step pipelines a day, at random working hours
  pipelines pushes to six repositories over working hours (quieter weekends), each pipeline
            a build, then 2 to 4 tests in parallel, then a deploy: stages that wait for each
            other, as `{"at", "repository", "pipeline": [[step], [step, ...], [step]]}` lines
"""
import json
import math
import random
import sys

DAY = 86400.0
WEEKS = 4


def duration(rng, median):
    return min(max(rng.lognormvariate(math.log(median), 0.6), 20.0), 7200.0)


def step(rng, at, median=240.0):
    return {"at": round(at, 1), "duration": round(duration(rng, median), 1),
            "labels": ["self.hosted", "linux"], "size": "1x"}


def bursty(rng):
    steps = []
    for day in range(7 * WEEKS):
        start = day * DAY
        for _ in range(6):
            at = start + rng.uniform(0, DAY)
            steps += [step(rng, at + rng.uniform(0, 30), 300.0) for _ in range(rng.randint(4, 8))]
        t = start + rng.expovariate(1 / 3600)
        while t < start + DAY:
            steps += [step(rng, t) for _ in range(rng.randint(1, 3))]
            t += rng.expovariate(1 / 3600)
    return steps


def periodic(rng):
    return [step(rng, hour * 3600.0 + rng.uniform(0, 20))
            for hour in range(24 * 7 * WEEKS) for _ in range(4)]


def quiet(rng):
    steps = []
    for day in range(7 * WEEKS):
        for _ in range(3):
            at = day * DAY + rng.uniform(8, 18) * 3600
            steps += [step(rng, at) for _ in range(rng.randint(1, 2))]
    return steps


def pipelines(rng):
    def named(name, typical):
        return {"name": name, "duration": round(min(max(rng.lognormvariate(math.log(typical), 0.15), 10.0), 7200.0), 1),
                "labels": ["self.hosted", "linux"], "size": "1x"}
    repositories = []
    for r in range(6):
        repositories.append({
            "name": f"repo-{r}",
            "build": min(max(rng.lognormvariate(math.log(180), 0.4), 60), 900),
            "tests": [min(max(rng.lognormvariate(math.log(150), 0.5), 30), 900)
                      for _ in range(rng.randint(2, 4))],
            "deploy": min(max(rng.lognormvariate(math.log(60), 0.3), 20), 300),
        })
    lines = []
    # Pushes per hour from 08:00, weekdays; a tenth of it at weekends.
    rates = [2, 5, 7, 7, 3, 6, 7, 7, 5, 2]
    for day in range(7 * WEEKS):
        weekend = day % 7 >= 5
        for hour, rate in enumerate(rates):
            rate = rate / 10 if weekend else rate
            start = day * DAY + (8 + hour) * 3600.0
            t = start + rng.expovariate(rate / 3600)
            while t < start + 3600:
                repo = rng.choice(repositories)
                lines.append({"at": round(t, 1), "repository": repo["name"], "pipeline": [
                    [named("build", repo["build"])],
                    [named(f"test-{i}", typical) for i, typical in enumerate(repo["tests"])],
                    [named("deploy", repo["deploy"])],
                ]})
                t += rng.expovariate(rate / 3600)
    return lines


def main():
    shape, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(f"{shape}-{seed}")
    shapes = {"bursty": bursty, "periodic": periodic, "quiet": quiet, "pipelines": pipelines}
    steps = sorted(shapes[shape](rng), key=lambda s: s["at"])
    for s in steps:
        print(json.dumps(s))


if __name__ == "__main__":
    main()

"""`subsample=N`: a seeded, stratified draw that every precision and backend shares."""

from __future__ import annotations

import random
from collections import Counter

from lowbit.records import Sample
from lowbit.run import select_samples, stratified_subsample


def mmlu_like(sizes: dict[str, int]) -> list[Sample]:
    return [Sample(id=f"{subject}/{i}", messages=[], item={"subject": subject, "index": i})
            for subject, size in sizes.items() for i in range(size)]


SIZES = {"abstract_algebra": 100, "anatomy": 135, "virology": 166, "world_religions": 171, "global_facts": 10}


def test_every_stratum_is_represented_in_proportion_and_in_dataset_order():
    samples = mmlu_like(SIZES)
    chosen = stratified_subsample(samples, 50, ("subject",))
    counts = Counter(s.item["subject"] for s in chosen)
    assert len(chosen) == 50 and set(counts) == set(SIZES)
    for subject, size in SIZES.items():  # within one of its proportional share
        assert abs(counts[subject] - 50 * size / len(samples)) <= 1, subject
    assert chosen == [s for s in samples if s in chosen]  # dataset order kept: limit= still means "the first N"


def test_the_draw_depends_on_the_ids_alone_and_grows_by_adding():
    samples = mmlu_like(SIZES)
    shuffled = random.Random(3).sample(samples, len(samples))
    small = {s.id for s in stratified_subsample(samples, 20, ("subject",))}
    assert small == {s.id for s in stratified_subsample(shuffled, 20, ("subject",))}
    assert small <= {s.id for s in stratified_subsample(samples, 40, ("subject",))}


def test_fewer_samples_than_strata_and_more_than_the_dataset():
    samples = mmlu_like(SIZES)
    assert len(stratified_subsample(samples, 3, ("subject",))) == 3
    assert stratified_subsample(samples, 10_000, ("subject",)) == samples
    assert len(stratified_subsample(samples, 7, ())) == 7  # a task without strata: a seeded draw


def test_limit_takes_the_first_of_the_subsample():
    samples = mmlu_like(SIZES)
    chosen = select_samples(samples, debug=False, limit=5, subsample=30, strata=("subject",))
    assert chosen == stratified_subsample(samples, 30, ("subject",))[:5]


def test_lowbit_eval_predicts_the_subsample(tmp_path):
    # through the real command line, on the organism (a trained model shipped with lowbit: no data files needed)
    from lowbit.cli import main
    from lowbit.organism import model_dir
    from lowbit.rundir import RunDir
    from lowbit.tasks import make_task

    out = tmp_path / "run"
    assert main(["eval", "model=organism", f"model_name={model_dir()}", "eval_dataset=organism-facts",
                 "predictor=transformers", "subsample=12", f"output_dir={out}"]) == 0
    expected = stratified_subsample(make_task("organism-facts").load(None), 12, ())
    assert sorted(p.id for p in RunDir(out).predictions()) == sorted(s.id for s in expected)  # written as finished

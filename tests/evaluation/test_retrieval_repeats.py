"""Retrieval with repeated caption texts: one text is one candidate, never a loss for the query."""
from __future__ import annotations

import torch

from mdw_kit.evaluation.metrics import caption_groups, retrieval_metrics


def _repeated_test_split(num_img: int = 30, repeats: int = 24, seed: int = 0):
    """Image embeddings, caption embeddings (the first ``repeats`` images share 2 texts) and pair_image."""
    g = torch.Generator().manual_seed(seed)
    img = torch.nn.functional.normalize(torch.randn(num_img, 16, generator=g), dim=1)
    text_of = list(range(num_img))
    for i in range(repeats):
        text_of[i] = i % 2  # 24 captions carry one of two texts
    texts = torch.nn.functional.normalize(torch.randn(num_img, 16, generator=g), dim=1)
    cap = texts[torch.tensor(text_of)]
    img[:repeats] = cap[:repeats]  # a perfect model: each image sits on its caption's text
    img[repeats:] = cap[repeats:]
    return img, cap, torch.arange(num_img)


def test_a_perfect_model_scores_full_marks_when_test_texts_repeat():
    img, cap, pair_image = _repeated_test_split()
    sim = img @ cap.T
    old = retrieval_metrics(sim, pair_image)
    assert old["TR@1"] < 30 and old["R-sum"] < 400  # ties counted against the query
    new = retrieval_metrics(sim, pair_image, groups=caption_groups(cap))
    assert new["R-sum"] == 600.0


def test_groups_change_nothing_when_texts_are_unique():
    g = torch.Generator().manual_seed(1)
    sim, pair_image = torch.randn(12, 20, generator=g), torch.randint(0, 12, (20,), generator=g)
    pair_image[:12] = torch.arange(12)
    emb = torch.randn(20, 8, generator=g)
    assert retrieval_metrics(sim, pair_image, groups=caption_groups(emb)) == retrieval_metrics(sim, pair_image)


def test_an_image_to_text_hit_is_any_caption_with_the_text_of_its_own():
    # image 0 carries "dog" (caption 0); caption 2 is image 1's, also "dog", and scores highest for image 0
    sim = torch.tensor([[0.5, 0.1, 0.9], [0.1, 0.8, 0.7]])
    pair_image, groups = torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0])
    assert retrieval_metrics(sim, pair_image, ks=(1,))["TR@1"] == 50.0
    m = retrieval_metrics(sim, pair_image, ks=(1,), groups=groups)
    assert m["TR@1"] == 100.0  # image 0's best text is "dog" (0.9, via caption 2), which is its own text
    assert m["IR@1"] == 100.0  # a "dog" caption finds image 0 or image 1: both carry "dog"


def test_a_constant_model_still_scores_zero_with_groups():
    pair_image = torch.arange(6)
    m = retrieval_metrics(torch.zeros(6, 6), pair_image, ks=(1,), groups=torch.tensor([0, 0, 1, 2, 3, 4]))
    assert m["TR@1"] == 0.0 and m["IR@1"] == 0.0

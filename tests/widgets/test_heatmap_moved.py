"""The correspondence heatmap's default view: what moved off the diagonal."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from widgets import CorrespondenceHeatmap


def test_heatmap_default_view_shows_what_moved_off_the_diagonal():
    M = 5
    P = torch.eye(M) + 0.01
    P[2, 4] = 0.6  # image 2 learned to also fit text 4
    images = torch.stack([torch.full((3, 8, 8), i / M) for i in range(M)])
    h = CorrespondenceHeatmap(P, images=images, text_labels=[f"caption {j}" for j in range(M)],
                              init_matrix=torch.eye(M))
    assert h.view.value == "off-diagonal"
    z = np.asarray(h.pane.fig.data[0].z)
    assert np.allclose(np.diag(z), 0) and z[2, 4] == pytest.approx(0.6 / P[2].sum().item(), rel=1e-5)
    assert h.top_pairs[0][:2] == (2, 4) and "(start 0.0%)" in h.moved_summary.value
    share = 100 * (1 - (P.diagonal() / P.sum(1)).mean().item())
    assert f"{share:.1f}%" in h.moved_summary.value
    h.detail_box.children[-1].children[1].children[1].click()  # the first top-pair button
    assert h.selected == (2, 4) and "caption 4" in h.detail.value
    assert len(h.static_figure().axes) >= 2


def test_a_click_on_the_cell_grid_selects_that_cell():
    """The browser reports heatmap clicks without a usable index, so an invisible scatter point per cell
    takes them; a click's (x, y) in display order selects the cell under it."""
    from types import SimpleNamespace

    import numpy as np

    from widgets.heatmap import CorrespondenceHeatmap
    P = np.eye(5) * 0.8 + 0.04
    w = CorrespondenceHeatmap(P)
    grid = w._figure().data[2]
    assert len(grid.x) == 25 and grid.marker.opacity < 0.05
    perm = w.permutation
    w._on_point(None, SimpleNamespace(xs=[3.0], ys=[1.0]), None)
    assert w.selected == (int(perm[1]), int(perm[3]))

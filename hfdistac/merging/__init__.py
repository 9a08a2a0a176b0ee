"""Merging methods: one registry, one module per method, shared primitives in :mod:`.primitives`.

Every method is a pure function of the task vectors (plus its hyper-parameters) returning the merged task
vector τ_merged; the scaling coefficient is applied outside: θ = θ₀ + α·τ_merged (METHOD.md §2).

Example::

    from hfdistac.merging import MERGE_METHODS, get_method

    tau = MERGE_METHODS["ties"](task_vectors, density=0.2)
    method = get_method("consensus")
    tau = method(task_vectors, tall_lambdas=[0.4, 0.5], k=2)

``MERGE_METHODS`` is the only registry: the CLI, recipes and model cards read names, paper links, citations
and parameter dataclasses (one field per hyper-parameter, with a ``help`` text) from it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InputError
from .average import AverageParams, average_merge
from .consensus import ConsensusParams, consensus_merge, select_tall_lambdas
from .iso import IsoCParams, IsoCTSParams, iso_c_merge, iso_cts_merge
from .regmean import RegMeanParams, RegMeanPlusPlusParams, regmean_merge, regmean_plusplus_merge
from .samerging import SAMergingParams, samerging_merge
from .task_arithmetic import TaskArithmeticParams, task_arithmetic_merge
from .ties import TiesParams, ties_merge
from .tsvm import TSVMParams, tsvm_merge
from .wudi import WUDIParams, wudi_merge

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MergeMethod:
    """A registered merging method.

    Args:
        name: Registry key (used on the CLI and in recipes).
        pretty_name: Display name for tables and model cards.
        paper: Title of the paper introducing the method.
        paper_url: arXiv link of that paper.
        citation: BibTeX entry.
        params_cls: Frozen dataclass of the hyper-parameters (defaults, ``help`` per field; validated in
            ``__post_init__``).
        fn: The pure merge function ``fn(task_vectors, **params) -> dict[str, Tensor]``.
        needs_data: Whether the method itself needs (unlabeled) data to merge (α selection aside).
        uses_alpha: Whether τ_merged is scaled by a searched α; ``False`` means α = 1.
        uses_device: Whether the method takes ``device=`` (it runs per parameter on ``hfdistac merge --device``).
    """

    name: str
    pretty_name: str
    paper: str
    paper_url: str
    citation: str
    params_cls: type
    fn: Callable[..., dict[str, torch.Tensor]]
    needs_data: bool = False
    uses_alpha: bool = True
    uses_device: bool = False

    def param_names(self) -> list[str]:
        """Names of the hyper-parameters, in declaration order."""
        return [f.name for f in dataclasses.fields(self.params_cls)]

    def parse_params(self, **params: Any) -> Any:
        """Validate hyper-parameters into an instance of :attr:`params_cls` (defaults filled in).

        Raises:
            InputError: for an unknown parameter (listing the valid ones) or an invalid value.
        """
        valid = self.param_names()
        unknown = sorted(set(params) - set(valid))
        if unknown:
            allowed = ", ".join(valid) if valid else "none"
            raise InputError(f"unknown parameter(s) {', '.join(map(repr, unknown))} for merge method "
                             f"{self.name!r}; valid parameters: {allowed}")
        return self.params_cls(**params)

    def __call__(self, task_vectors: Sequence[Mapping[str, torch.Tensor]], **params: Any) -> dict[str, torch.Tensor]:
        """Merge ``task_vectors`` with validated ``params``.

        Args:
            task_vectors: τ_1 … τ_T, ``{parameter name: tensor}`` mappings with identical keys and shapes
                (lazy safetensors-backed task vectors are read one parameter at a time).
            **params: Hyper-parameters (see :attr:`params_cls`).

        Returns:
            The merged task vector τ_merged (float32); the merged model is θ₀ + α·τ_merged.
        """
        parsed = self.parse_params(**params)
        kwargs = {f.name: getattr(parsed, f.name) for f in dataclasses.fields(parsed)}
        logger.debug("merging %d task vectors with %s(%s)", len(task_vectors), self.name, kwargs)
        return self.fn(task_vectors, **kwargs)


MERGE_METHODS: dict[str, MergeMethod] = {
    "task_arithmetic": MergeMethod(
        name="task_arithmetic",
        pretty_name="Task Arithmetic",
        paper="Editing Models with Task Arithmetic",
        paper_url="https://arxiv.org/abs/2212.04089",
        citation="""@inproceedings{ilharco2023editing,
  title={Editing Models with Task Arithmetic},
  author={Ilharco, Gabriel and Ribeiro, Marco Tulio and Wortsman, Mitchell and Gururangan, Suchin and Schmidt, Ludwig and Hajishirzi, Hannaneh and Farhadi, Ali},
  booktitle={International Conference on Learning Representations (ICLR)},
  year={2023},
  eprint={2212.04089},
  archivePrefix={arXiv}
}""",
        params_cls=TaskArithmeticParams,
        fn=task_arithmetic_merge,
    ),
    "ties": MergeMethod(
        name="ties",
        pretty_name="TIES-Merging",
        paper="TIES-Merging: Resolving Interference When Merging Models",
        paper_url="https://arxiv.org/abs/2306.01708",
        citation="""@inproceedings{yadav2023ties,
  title={{TIES}-Merging: Resolving Interference When Merging Models},
  author={Yadav, Prateek and Tam, Derek and Choshen, Leshem and Raffel, Colin and Bansal, Mohit},
  booktitle={Advances in Neural Information Processing Systems (NeurIPS)},
  year={2023},
  eprint={2306.01708},
  archivePrefix={arXiv}
}""",
        params_cls=TiesParams,
        fn=ties_merge,
    ),
    "consensus": MergeMethod(
        name="consensus",
        pretty_name="Consensus TA",
        paper="Localizing Task Information for Improved Model Merging and Compression",
        paper_url="https://arxiv.org/abs/2405.07813",
        citation="""@inproceedings{wang2024localizing,
  title={Localizing Task Information for Improved Model Merging and Compression},
  author={Wang, Ke and Dimitriadis, Nikolaos and Ortiz-Jimenez, Guillermo and Fleuret, Fran{\\c{c}}ois and Frossard, Pascal},
  booktitle={International Conference on Machine Learning (ICML)},
  year={2024},
  eprint={2405.07813},
  archivePrefix={arXiv}
}""",
        params_cls=ConsensusParams,
        fn=consensus_merge,
    ),
    "tsvm": MergeMethod(
        name="tsvm",
        pretty_name="TSV-M",
        paper="Task Singular Vectors: Reducing Task Interference in Model Merging",
        paper_url="https://arxiv.org/abs/2412.00081",
        citation="""@inproceedings{gargiulo2025task,
  title={Task Singular Vectors: Reducing Task Interference in Model Merging},
  author={Gargiulo, Antonio Andrea and Crisostomi, Donato and Bucarelli, Maria Sofia and Scardapane, Simone and Silvestri, Fabrizio and Rodol{\\`a}, Emanuele},
  booktitle={Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2025},
  eprint={2412.00081},
  archivePrefix={arXiv}
}""",
        params_cls=TSVMParams,
        fn=tsvm_merge,
        uses_device=True,
    ),
    "average": MergeMethod(
        name="average",
        pretty_name="Weight averaging",
        paper="Model soups: averaging weights of multiple fine-tuned models improves accuracy without "
              "increasing inference time",
        paper_url="https://arxiv.org/abs/2203.05482",
        citation="""@inproceedings{wortsman2022model,
  title={Model soups: averaging weights of multiple fine-tuned models improves accuracy without increasing inference time},
  author={Wortsman, Mitchell and Ilharco, Gabriel and Gadre, Samir Yitzhak and Roelofs, Rebecca and Gontijo-Lopes, Raphael and Morcos, Ari S. and Namkoong, Hongseok and Farhadi, Ali and Carmon, Yair and Kornblith, Simon and Schmidt, Ludwig},
  booktitle={International Conference on Machine Learning (ICML)},
  year={2022},
  eprint={2203.05482},
  archivePrefix={arXiv}
}""",
        params_cls=AverageParams,
        fn=average_merge,
        uses_alpha=False,
    ),
    "iso_c": MergeMethod(
        name="iso_c",
        pretty_name="Iso-C",
        paper="No Task Left Behind: Isotropic Model Merging with Common and Task-Specific Subspaces",
        paper_url="https://arxiv.org/abs/2502.04959",
        citation=r"""@inproceedings{marczak2025notask,
  title={No Task Left Behind: Isotropic Model Merging with Common and Task-Specific Subspaces},
  author={Marczak, Daniel and Magistri, Simone and Cygert, Sebastian and Twardowski, Bart{\l}omiej and Bagdanov, Andrew D. and van de Weijer, Joost},
  booktitle={International Conference on Machine Learning (ICML)},
  year={2025},
  eprint={2502.04959},
  archivePrefix={arXiv}
}""",
        params_cls=IsoCParams,
        fn=iso_c_merge,
        uses_device=True,
    ),
    "iso_cts": MergeMethod(
        name="iso_cts",
        pretty_name="Iso-CTS",
        paper="No Task Left Behind: Isotropic Model Merging with Common and Task-Specific Subspaces",
        paper_url="https://arxiv.org/abs/2502.04959",
        citation=r"""@inproceedings{marczak2025notask,
  title={No Task Left Behind: Isotropic Model Merging with Common and Task-Specific Subspaces},
  author={Marczak, Daniel and Magistri, Simone and Cygert, Sebastian and Twardowski, Bart{\l}omiej and Bagdanov, Andrew D. and van de Weijer, Joost},
  booktitle={International Conference on Machine Learning (ICML)},
  year={2025},
  eprint={2502.04959},
  archivePrefix={arXiv}
}""",
        params_cls=IsoCTSParams,
        fn=iso_cts_merge,
        uses_device=True,
    ),
    "wudi": MergeMethod(
        name="wudi",
        pretty_name="WUDI",
        paper="Whoever Started the Interference Should End It: Guiding Data-Free Model Merging via Task Vectors",
        paper_url="https://arxiv.org/abs/2503.08099",
        citation="""@inproceedings{cheng2025whoever,
  title={Whoever Started the Interference Should End It: Guiding Data-Free Model Merging via Task Vectors},
  author={Cheng, Runxi and Xiong, Feng and Wei, Yongxian and Zhu, Wanyun and Yuan, Chun},
  booktitle={International Conference on Machine Learning (ICML)},
  year={2025},
  eprint={2503.08099},
  archivePrefix={arXiv}
}""",
        params_cls=WUDIParams,
        fn=wudi_merge,
        uses_alpha=False,
        uses_device=True,
    ),
    "regmean": MergeMethod(
        name="regmean",
        pretty_name="RegMean",
        paper="Dataless Knowledge Fusion by Merging Weights of Language Models",
        paper_url="https://arxiv.org/abs/2212.09849",
        citation="""@inproceedings{jin2023dataless,
  title={Dataless Knowledge Fusion by Merging Weights of Language Models},
  author={Jin, Xisen and Ren, Xiang and Preotiuc-Pietro, Daniel and Cheng, Pengxiang},
  booktitle={International Conference on Learning Representations (ICLR)},
  year={2023},
  eprint={2212.09849},
  archivePrefix={arXiv}
}""",
        params_cls=RegMeanParams,
        fn=regmean_merge,
        needs_data=True,
        uses_alpha=False,
    ),
    "regmean_plusplus": MergeMethod(
        name="regmean_plusplus",
        pretty_name="RegMean++",
        paper="RegMean++: Enhancing Effectiveness and Generalization of Regression Mean for Model Merging",
        paper_url="https://arxiv.org/abs/2508.03121",
        citation="""@article{nguyen2025regmeanpp,
  title={RegMean++: Enhancing Effectiveness and Generalization of Regression Mean for Model Merging},
  author={Nguyen, The-Hai and Huu-Tien, Dang and Suzuki, Takeshi and Nguyen, Le-Minh},
  journal={arXiv preprint arXiv:2508.03121},
  year={2025},
  eprint={2508.03121},
  archivePrefix={arXiv}
}""",
        params_cls=RegMeanPlusPlusParams,
        fn=regmean_plusplus_merge,
        needs_data=True,
        uses_alpha=False,
    ),
    "samerging": MergeMethod(
        name="samerging",
        pretty_name="SAMerging",
        paper="Model Merging via Multi-Teacher Knowledge Distillation",
        paper_url="https://arxiv.org/abs/2512.21288",
        citation="""@article{dalili2025model,
  title={Model Merging via Multi-Teacher Knowledge Distillation},
  author={Dalili, Seyed Arshan and Mahdavi, Mehrdad},
  journal={arXiv preprint arXiv:2512.21288},
  year={2025},
  eprint={2512.21288},
  archivePrefix={arXiv}
}""",
        params_cls=SAMergingParams,
        fn=samerging_merge,
        needs_data=True,
        uses_alpha=False,
    ),
}


def get_method(name: str) -> MergeMethod:
    """The registered method called ``name``.

    Raises:
        InputError: for an unknown name, listing the valid ones.
    """
    try:
        return MERGE_METHODS[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown merge method {name!r}; valid methods: {', '.join(MERGE_METHODS)}",
                         "pick one of the names above") from None


__all__ = [
    "MERGE_METHODS",
    "AverageParams",
    "ConsensusParams",
    "IsoCParams",
    "IsoCTSParams",
    "RegMeanParams",
    "RegMeanPlusPlusParams",
    "WUDIParams",
    "MergeMethod",
    "TSVMParams",
    "TaskArithmeticParams",
    "TiesParams",
    "average_merge",
    "consensus_merge",
    "get_method",
    "iso_c_merge",
    "iso_cts_merge",
    "regmean_merge",
    "regmean_plusplus_merge",
    "select_tall_lambdas",
    "task_arithmetic_merge",
    "ties_merge",
    "tsvm_merge",
    "wudi_merge",
]

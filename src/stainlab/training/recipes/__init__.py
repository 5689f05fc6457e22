"""The training recipes: ``cyclegan`` (with paper 003's ``--skips`` and ``--ssim-cycle``), ``ccgan`` and
``pcnet`` (paper 004), ``distill`` (paper 000), ``pix2pix`` (Isola et al.), ``derestainer`` and its HER2
``comparator`` (paper 002). The network registry names them and where each lives (each architecture
lists the recipes that write it: :func:`stainlab.networks.recipes`); look one up with
:func:`stainlab.training.recipe_class`."""

from setuptools import find_packages, setup

setup(
    name="ffcv_resnet",
    version="0.1.0",
    description="Fast ResNet-18 training on CIFAR-10 with FFCV, and batched GradCAM of its mistakes",
    packages=find_packages(include=["ffcv_resnet", "ffcv_resnet.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "ffcv==1.0.2",
        "fastargs==1.2.0",
        "terminaltables",  # fastargs imports it without declaring it
        "pyyaml",  # fastargs reads YAML through it without declaring it
        "numpy",
        "matplotlib",
        "pillow",
        "scipy",  # confidence intervals and tests (scipy.stats): a well-kept library over our own
        # confident learning over the test probabilities (label issues among the errors): the
        # reference implementation of Northcutt et al., not ours to rewrite; optional at run time
        "cleanlab==2.9.0",
        "setuptools",  # ffcv's build imports distutils, which Python 3.12 no longer ships
    ],
    package_data={"ffcv_resnet.explain": ["report_page.html", "suspects_page.html"],  # the pages' templates
                  "ffcv_resnet.compare": ["compare_page.html"],
                  "ffcv_resnet.predict": ["predict_page.html"]},
    # playwright drives the system's chromium (apt) in the report's browser test: never
    # `playwright install`, no browser download
    # aum: the reference AUM (Pleiss et al.) the dynamics are held to
    extras_require={"test": ["pytest", "pytest-timeout", "grad-cam==1.5.7", "playwright==1.65.2",
                             "aum==1.0.2"]},
)

"""Maps the role folders into the ``fleetlet.*`` namespace (see docs/ARCHITECTURE.md)."""

from setuptools import find_packages, setup

ROLE_DIRS = {
    "fleetlet.server": "server",
    "fleetlet.gateway": "gateway",
    "fleetlet.schemas": "schemas",
    "fleetlet.agent": "device-firmware/linux",
    "fleetlet.hardware": "hardware",
    "fleetlet.firmware": "device-firmware/micropython",
}

packages: list[str] = []
package_dir: dict[str, str] = {}
for pkg, folder in ROLE_DIRS.items():
    package_dir[pkg] = folder
    packages.append(pkg)
    packages += [f"{pkg}.{sub}" for sub in find_packages(folder)]

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={
        "fleetlet.schemas": ["api/*.json", "wire/*.cddl", "vectors/*.json"],
        "fleetlet.hardware": ["*.toml"],
        "fleetlet.firmware": ["*.py", "**/*.py"],
    },
    include_package_data=True,
)

"""conf/ and the bundled assets are found when the package is installed non-editable."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

# What a build of the working tree must not see: setuptools' build/ keeps files deleted since the
# last build and would ship them.
LEFTOVERS = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", "outputs")


def test_wheel_ships_configs_and_assets(tmp_path):
    root = tmp_path / "src"
    shutil.copytree(Path(__file__).resolve().parents[2], root, symlinks=True, ignore=LEFTOVERS)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(root)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("simpo_cli-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("simpo_cli/conf/config.yaml", "simpo_cli/conf/model/tiny-llama.yaml",
                   "simpo_cli/assets/data/dpo_en_demo.json", "simpo_cli/assets/data/LICENSE",
                   "simpo_cli/assets/tiny-tokenizer/tokenizer.json", "simpo_cli/recipes/llama3-instruct.yaml"):
        assert needed in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # Run from an unrelated directory with only the installed copy importable.
    code = ("import simpo_cli.config.schema as c, sys; assert str(c.CONF_DIR).startswith(sys.argv[1]), c.CONF_DIR;"
            "from simpo_cli.cli import main; sys.argv=['simpo','train','--cfg','job',*sys.argv[2:]]; main()")
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    # a setting's recipe file ships too: model=<setting> composes from the installed copy
    out = subprocess.run([sys.executable, "-c", code, str(site), "model=llama3-instruct"], cwd=tmp_path,
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "name_or_path: meta-llama/Meta-Llama-3-8B-Instruct" in out.stdout and "beta: 2.5" in out.stdout
    assert "path: princeton-nlp/llama3-ultrafeedback" in out.stdout

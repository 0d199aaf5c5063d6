"""CODE2LORA_REFINE_METHOD (issue 18): the refine job's method comes from the settings unless the job names one."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.jobs.refine import refine_config
from service.settings import Settings


def test_the_method_setting_reaches_the_refine_config(tmp_path) -> None:
    assert refine_config(Settings(data_dir=tmp_path)).method == "supervised"
    rl = Settings(data_dir=tmp_path, refine_method="rl")
    assert refine_config(rl).method == "rl"
    assert refine_config(rl, {"method": "supervised"}).method == "supervised"
    assert refine_config(rl, {"steps": 3}).method == "rl"
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, refine_method="dpo")


def test_refine_command_refuses_an_unknown_method(tmp_path) -> None:
    from typer.testing import CliRunner

    from code2lora.cli import app

    result = CliRunner().invoke(app, ["refine", str(tmp_path), "--method", "dpo"])
    assert result.exit_code == 2 and "choose supervised or rl" in result.output


def test_the_api_body_names_a_method_or_leaves_it_to_the_setting() -> None:
    import pydantic

    from service.api.schemas import RefineIn

    assert RefineIn().model_dump(exclude_none=True) == {}  # the job then takes CODE2LORA_REFINE_METHOD
    assert RefineIn(method="rl").model_dump(exclude_none=True) == {"method": "rl"}
    with pytest.raises(pydantic.ValidationError):
        RefineIn.model_validate({"method": "genetic"})

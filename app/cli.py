"""The `kilowatch` command: one entry point, one sub-command group per part of the product.

Each group's module imports its heavy dependencies inside the commands, so a gateway with only the
`agent` extra installed can run `kilowatch agent ...` without FastAPI or InfluxDB libraries.
"""

from __future__ import annotations

import typer

from agent.cli import app as agent_app
from app.demo import demo
from app.evaluation.cli import eval_command
from app.provision_cli import broker_setup, provision_gateway, revoke_gateway
from app.schemas_cli import schemas
from collector.cli import app as collector_app
from kilowatch.profiles_cli import app as profiles_app
from sim.cli import app as sim_app

app = typer.Typer(
    name="kilowatch",
    help="Edge metering agent and central collector that find electricity waste.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(agent_app, name="agent", help="Read meters and publish readings (runs on the gateway).")
collector_app.command("provision-gateway")(provision_gateway)  # in app/: they need the agent's config model
collector_app.command("revoke-gateway")(revoke_gateway)
collector_app.command("broker-setup")(broker_setup)
app.add_typer(collector_app, name="collector", help="Ingest readings, store them and serve the API.")
app.add_typer(sim_app, name="sim", help="Simulated Modbus meters for tests and demos.")
app.add_typer(profiles_app, name="profiles", help="List, show and check device profiles.")
app.command()(demo)
app.command()(schemas)
app.command(name="eval")(eval_command)

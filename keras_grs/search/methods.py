"""The pruning methods, each declared once: name, order policy, unit selection, options, what it needs.

Every front end reads this registry: :func:`keras_grs.search.make_search`, the keras-tuner oracles
(``keras_grs.tuner.oracles.ORACLES``), the Optuna samplers (``keras_grs.optuna.samplers.SAMPLERS``), the command
line's ``--method`` choices and help, and the run's settings checks (:func:`keras_grs.run.check_settings`).
Adding a method is one :func:`register` call (plus its policy code in :mod:`keras_grs.search.order`); the oracle
and the sampler of a method without a class of its own are made from the base class.

Example:
    >>> from keras_grs.search.methods import METHODS
    >>> METHODS["nwm"].units, METHODS["nwm"].needs_norms(), sorted(METHODS["jgrs"].options)
    ('magnitude', True, ['phases'])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from keras_grs.search.order import DEFAULT_PHASES, check_phases, greedy, natural, phased, random_order
from keras_grs.search.units import NEEDS_NORMS, UNIT_SELECTIONS


@dataclass(frozen=True)
class Option:
    """A setting only some methods take (JGRS's ``phases``).

    ``check`` turns what a user passes into the value the policy reads (refusing a bad one with a ValueError or
    TypeError); ``stored`` turns that into the JSON a project or study records, which ``check`` accepts again.
    """

    default: Any
    check: Callable[[Any], Any] = lambda value: value
    stored: Callable[[Any], Any] = lambda value: value


@dataclass(frozen=True)
class Method:
    """One pruning method.

    Args:
        name: what users type (``method="grs"``, ``--method grs``).
        description: one line for the command line's help.
        units: the unit selection it uses unless overridden (a key of ``UNIT_SELECTIONS``).
        order: its inter-layer order policy (see :mod:`keras_grs.search.order`); None when ``root`` builds it.
        options: settings it alone takes, by keyword.
        root: given the checked options as keywords, the policy of the whole method (JGRS's phases).
    """

    name: str
    description: str
    units: str
    order: Callable | None = None
    options: Mapping[str, Option] = field(default_factory=dict)
    root: Callable | None = None

    def needs_norms(self, units: str | None = None) -> bool:
        """Whether candidates must report their trained units' L1 norms (``units`` overrides the selection)."""
        return (units or self.units) in NEEDS_NORMS

    def pick(self, **values) -> dict:
        """The given settings this method takes (the others dropped): ``METHODS[m].pick(phases=phases)``."""
        return {name: value for name, value in values.items() if name in self.options}

    def checked_options(self, given: Mapping[str, Any]) -> dict:
        """The method's options as its policy reads them, defaults filled in for those not given (or None).
        An option the method does not take is refused, naming the methods that do."""
        for name, value in given.items():
            if value is not None and name not in self.options:
                takers = [m for m, method in METHODS.items() if name in method.options]
                raise ValueError(f"{name} only apply to method {' or '.join(map(repr, takers)) or 'none'}, "
                                 f"not {self.name!r}")
        return {name: option.check(option.default if given.get(name) is None else given[name])
                for name, option in self.options.items()}

    def stored_options(self, given: Mapping[str, Any]) -> dict:
        """:meth:`checked_options` as a project or study records them (JSON)."""
        return {name: self.options[name].stored(value) for name, value in self.checked_options(given).items()}

    def policy(self, given: Mapping[str, Any]) -> tuple[Callable | None, Callable | None]:
        """``(order, root)`` for :class:`keras_grs.search.Search`."""
        options = self.checked_options(given)
        return self.order, self.root(**options) if self.root is not None else None


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method (or replace one of the same name); the oracles, samplers, CLI and checks offer it at once."""
    if method.units not in UNIT_SELECTIONS:
        raise ValueError(f"method {method.name!r}: unknown unit selection {method.units!r}; choose one of "
                         f"{', '.join(UNIT_SELECTIONS)}")
    if (method.order is None) == (method.root is None):
        raise ValueError(f"method {method.name!r} needs exactly one of an order policy and a root")
    METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a method added with :func:`register`."""
    METHODS.pop(name, None)


def method_named(name) -> Method:
    """The registered method ``name``; an unknown one is refused, listing the choices."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


class ByMethod(Mapping):
    """Method name -> a front end's class for it, for every registered method (``ORACLES``, ``SAMPLERS``).

    A class of ``base``'s module whose ``method`` attribute names the method is used (``GRSOracle``); a method
    without one gets a subclass of ``base`` made on first use (``FOOOracle`` for a registered ``foo``).
    """

    def __init__(self, base: type, suffix: str):
        self.base, self.suffix, self._made = base, suffix, {}

    def __getitem__(self, name):
        if name not in METHODS:
            raise KeyError(name)
        for cls in self.base.__subclasses__():
            if cls.__module__ == self.base.__module__ and cls.__dict__.get("method") == name:
                return cls
        if name not in self._made:
            self._made[name] = type(f"{name.upper()}{self.suffix}", (self.base,),
                                    {"method": name, "__doc__": METHODS[name].description,
                                     "__module__": self.base.__module__})
        return self._made[name]

    def __iter__(self):
        return iter(list(METHODS))

    def __len__(self):
        return len(METHODS)


_PHASES = Option(DEFAULT_PHASES, check=check_phases, stored=lambda phases: [[p.rate, p.attempts] for p in phases])

register(Method("grs", "greedy order (every width's candidate trained, the best valid one kept), random units",
                "random", order=greedy))
register(Method("rrs", "random order (a random width loses a random unit), stops at the first failure", "random",
                order=random_order))
register(Method("nwm", "natural order (widths input to output), the unit with the smallest L1 norm goes",
                "magnitude", order=natural))
register(Method("jgrs", "jumps (a share of every width at once) through the far phase, then GRS, random units",
                "random", options={"phases": _PHASES}, root=lambda phases: phased(phases)))

"""One band rule for every stage: which band of the data feeds which input of the backbone.

The backbone's inputs and the data's bands each have names and, where known, identities (what
they measure: :class:`~geopera.core.identity.BandIdentity`). :func:`plan_bands` matches them,
in this order:

1. ``--bands SLOT=BAND`` (``by-hand``): the user's mapping, from a backbone band name or common
   name to a data band name. Mapping a band onto an input of another identity is allowed and
   noted.
2. ``by-identity``, when the backbone knows the identity of every input and the data of some
   band: each input takes the data band of the same common name (when only one band has it),
   else the band of the nearest centre wavelength within :data:`WAVELENGTH_TOLERANCE_UM`.
   Inputs the data lacks are left out (their patch-embedding channels dropped, named in a
   note) when the stage allows it; data bands the backbone lacks are ignored (named), or
   ``adapt``-ed: given new input channels initialised from the nearest-wavelength input.
3. ``by-name``: every backbone band name is among the data's (same sensor, no identities).
4. ``as-is`` / ``adapted``: the data's bands in file order, only when the identities of one side
   are unknown; ``adapted`` when the counts differ (timm's ``adapt_input_conv``). A note says so.

A data band is never put into an input of another known identity by file order.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from geopera.core.errors import BandSelectionError, note
from geopera.core.identity import BandIdentity
from geopera.data.identity import identify
from geopera.data.labelled.scenes import image_band_names
from geopera.data.sensors import stem_family
from geopera.models.loading import BackboneSource

#: Largest centre-wavelength difference (µm) for matching bands without a common name.
WAVELENGTH_TOLERANCE_UM = 0.03
#: What a stage does with data bands the backbone lacks.
EXTRA_BANDS = ("ignore", "adapt")


@dataclass(frozen=True)
class Bands:
    """The bands of one side (backbone inputs or data), in order.

    Attributes:
        names: Band names.
        identities: One per band (None where unknown), or None when nothing is known.
    """

    names: list[str]
    identities: list[BandIdentity | None] | None = None

    def identity(self, i: int) -> BandIdentity | None:
        """The identity of band ``i``, or None."""
        return self.identities[i] if self.identities else None

    def label(self, i: int) -> str:
        """``B04 (red)`` for messages."""
        known = self.identity(i)
        return f"{self.names[i]} ({known.common})" if known and known.common else self.names[i]


@dataclass
class BandPlan:
    """How the data's bands feed the backbone.

    Attributes:
        indices: 0-based data band per model input, in model order.
        names: Their data band names.
        rule: ``by-hand``, ``by-identity``, ``by-name``, ``as-is`` or ``adapted``.
        channels: Per model input, the backbone input whose learned weights it starts from;
            None: the backbone's inputs as they are (or timm's adaptation for ``adapted``).
        identities: Per model input, what it measures (None where unknown).
        notes: What the user should know (inputs left out, bands ignored, forced mappings).
    """

    indices: list[int]
    names: list[str]
    rule: str
    channels: list[int] | None = None
    identities: list[BandIdentity | None] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> list[dict[str, object]]:
        """Per model input: data band, identity and the backbone input it starts from."""
        return [
            {
                "band": name,
                "identity": identity.to_dict() if identity else None,
                "from_input": self.channels[i] if self.channels is not None else i,
            }
            for i, (name, identity) in enumerate(zip(self.names, self.identities, strict=True))
        ]


def parse_mapping(pairs: Sequence[str] | None) -> dict[str, str] | None:
    """``["red=B04", "nir=B08"]`` -> ``{"red": "B04", "nir": "B08"}`` (``--bands``).

    Raises:
        BandSelectionError: If a pair is not ``SLOT=BAND``.
    """
    if not pairs:
        return None
    out: dict[str, str] = {}
    for pair in pairs:
        slot, sep, band = pair.partition("=")
        if not sep or not slot.strip() or not band.strip():
            raise BandSelectionError(
                f"--bands {pair!r} must be SLOT=BAND (a backbone band or common name, then a "
                "band of the data), e.g. --bands red=B04 green=B03 blue=B02"
            )
        out[slot.strip()] = band.strip()
    return out


def _same(a: BandIdentity | None, b: BandIdentity | None) -> bool | None:
    """Whether two identities are the same band (None when one is unknown)."""
    if a is None or b is None or (a.common is None and a.center_um is None):
        return None
    if a.common and b.common and a.common == b.common:
        return True
    if a.center_um is not None and b.center_um is not None:
        return abs(a.center_um - b.center_um) <= WAVELENGTH_TOLERANCE_UM
    return False


def _by_common_name(backbone: Bands, data: Bands) -> dict[int, int]:
    """Backbone input -> data band, where exactly one data band has the input's common name."""
    found: dict[int, int] = {}
    for slot in range(len(backbone.names)):
        want = backbone.identity(slot)
        same = [
            i
            for i in range(len(data.names))
            if want is not None
            and want.common
            and (data.identity(i) or BandIdentity()).common == want.common
        ]
        if len(same) == 1 and same[0] not in found.values():
            found[slot] = same[0]
    return found


def _by_wavelength(backbone: Bands, data: Bands, found: dict[int, int]) -> dict[int, int]:
    """The inputs left: the free data band nearest in centre wavelength, within tolerance."""
    for slot in range(len(backbone.names)):
        want = backbone.identity(slot)
        if slot in found or want is None or want.center_um is None:
            continue
        distances = [
            (abs(c - want.center_um), i)
            for i in range(len(data.names))
            if i not in found.values() and (c := (data.identity(i) or BandIdentity()).center_um)
        ]
        best = min(distances, default=None)
        if best is not None and best[0] <= WAVELENGTH_TOLERANCE_UM:
            found[slot] = best[1]
    return found


def _by_hand(backbone: Bands, data: Bands, mapping: dict[str, str]) -> BandPlan:
    """The user's ``--bands`` mapping: each backbone input named by band or common name."""
    slots: list[int] = []
    indices: list[int] = []
    notes: list[str] = []
    for key, band in mapping.items():
        slot = next(
            (
                i
                for i in range(len(backbone.names))
                if key in (backbone.names[i], (backbone.identity(i) or BandIdentity()).common)
            ),
            None,
        )
        if slot is None:
            raise BandSelectionError(
                f"--bands {key}={band}: the backbone has no band {key!r}; its bands are "
                f"{', '.join(backbone.label(i) for i in range(len(backbone.names)))}"
            )
        if band not in data.names:
            raise BandSelectionError(
                f"--bands {key}={band}: the data has no band {band!r}; its bands are "
                f"{', '.join(data.names)}"
            )
        index = data.names.index(band)
        if _same(backbone.identity(slot), data.identity(index)) is False:
            notes.append(
                f"--bands puts {data.label(index)} into the backbone's {backbone.label(slot)} "
                "input, as you asked"
            )
        slots.append(slot)
        indices.append(index)
    return _plan(backbone, data, "by-hand", slots, indices, notes)


def _by_identity(backbone: Bands, data: Bands, partial: bool) -> BandPlan:
    """Each backbone input takes the data band that measures the same thing."""
    found = _by_wavelength(backbone, data, _by_common_name(backbone, data))
    slots = sorted(found)
    missing = [backbone.label(s) for s in range(len(backbone.names)) if s not in found]
    if not slots or (missing and not partial):
        raise BandSelectionError(
            f"the data's bands ({', '.join(data.label(i) for i in range(len(data.names)))}) "
            f"lack the backbone's {', '.join(missing)}; map bands by hand with --bands "
            f"SLOT=BAND (e.g. --bands {backbone.names[0]}={data.names[0]})"
        )
    notes = [f"the data lacks the backbone's {', '.join(missing)}: left out"] if missing else []
    return _plan(backbone, data, "by-identity", slots, [found[s] for s in slots], notes)


def _plan(
    backbone: Bands, data: Bands, rule: str, slots: list[int], indices: list[int], notes: list[str]
) -> BandPlan:
    extra = [data.label(i) for i in range(len(data.names)) if i not in indices]
    if extra:
        notes.append(f"data bands the backbone has no input for: {', '.join(extra)}")
    whole = slots == list(range(len(backbone.names)))
    return BandPlan(
        indices=indices,
        names=[data.names[i] for i in indices],
        rule=rule,
        channels=None if whole else slots,
        identities=[
            backbone.identity(s) or data.identity(i) for s, i in zip(slots, indices, strict=True)
        ],
        notes=notes,
    )


def adapt_extra(plan: BandPlan, backbone: Bands, data: Bands) -> BandPlan:
    """Give the data bands the backbone lacks their own inputs (``--extra-bands adapt``).

    Each new input starts from the learned weights of the backbone input nearest in centre
    wavelength (the first input when wavelengths are unknown).

    Returns:
        The plan with one more input per extra data band, after the matched ones.
    """
    if plan.rule not in ("by-identity", "by-hand"):
        return plan
    slots = list(plan.channels) if plan.channels is not None else list(range(len(plan.indices)))
    extra = [i for i in range(len(data.names)) if i not in plan.indices]
    for index in extra:
        ident = data.identity(index)
        centres = [
            (abs(c - ident.center_um), s)
            for s in range(len(backbone.names))
            if ident
            and ident.center_um is not None
            and (c := (backbone.identity(s) or BandIdentity()).center_um) is not None
        ]
        slots.append(min(centres)[1] if centres else 0)
    if not extra:
        return plan
    labels = ", ".join(data.label(i) for i in extra)
    return BandPlan(
        indices=plan.indices + extra,
        names=plan.names + [data.names[i] for i in extra],
        rule=plan.rule,
        channels=slots,
        identities=plan.identities + [data.identity(i) for i in extra],
        notes=[n for n in plan.notes if not n.startswith("data bands the backbone")]
        + [f"new inputs for {labels}, each from the weights of the nearest band"],
    )


def plan_bands(
    backbone: Bands,
    data: Bands,
    in_chans: int,
    mapping: dict[str, str] | None = None,
    partial: bool = True,
) -> BandPlan:
    """Apply the band rule (module docstring).

    Args:
        backbone: The backbone's inputs (names may be empty: unknown).
        data: The data's bands, in file order.
        in_chans: The backbone's number of inputs.
        mapping: ``--bands`` (backbone band or common name -> data band name), or None.
        partial: Whether backbone inputs the data lacks may be left out (a fine-tuned model's
            inputs may not: predict).

    Returns:
        The plan.

    Raises:
        BandSelectionError: If the bands cannot be matched as the rule asks.
    """
    if mapping:
        return _by_hand(backbone, data, mapping)
    known = backbone.identities is not None and all(backbone.identities)
    if known and data.identities is not None and any(data.identities):
        return _by_identity(backbone, data, partial)
    upper = [n.upper() for n in data.names]
    if backbone.names and all(b.upper() in upper for b in backbone.names):
        slots = list(range(len(backbone.names)))
        indices = [upper.index(b.upper()) for b in backbone.names]
        return _plan(backbone, data, "by-name", slots, indices, [])
    indices = list(range(len(data.names)))
    rule = "as-is" if len(data.names) == in_chans else "adapted"
    side = "the data's" if known else "the backbone's"
    note = f"{side} band identities are unknown: the data's bands are used in file order"
    if rule == "adapted":
        note += f", {len(data.names)} bands into a backbone of {in_chans} (timm adapt_input_conv)"
    return BandPlan(
        indices, list(data.names), rule, None, [data.identity(i) for i in indices], [note]
    )


def raster_bands(path: str) -> Bands:
    """The bands of a raster file: names and identities (see :mod:`geopera.data.identity`)."""
    names = image_band_names(path)
    stem = Path(path).stem
    return Bands(names, identify(names, stem_family(stem), stem))


def plan_for(
    source: BackboneSource,
    data: Bands,
    mapping: dict[str, str] | None = None,
    partial: bool = True,
    extra: str = "ignore",
    tell: bool = True,
) -> BandPlan:
    """A stage's band plan for a backbone, with its notes told to the user.

    Args:
        source: The resolved ``--weights``.
        data: The data's bands.
        mapping: ``--bands`` pairs, or None.
        partial: Whether backbone inputs the data lacks may be left out.
        extra: ``ignore`` or ``adapt`` the data bands the backbone lacks.
        tell: Tell the plan's notes now (False: the stage calls :func:`tell` once its own
            checks passed, so that a refused plan prints its error only).

    Returns:
        The plan (random initialisation: every data band, ``as-is``).
    """
    if extra not in EXTRA_BANDS:
        raise BandSelectionError(f"extra bands must be one of {EXTRA_BANDS}, got {extra!r}")
    if source.state_dict is None:  # random initialisation: built for the data's bands
        every = list(range(len(data.names)))
        return BandPlan(every, list(data.names), "as-is", None, [data.identity(i) for i in every])
    backbone = Bands(source.bands or [], source.identities)
    plan = plan_bands(backbone, data, source.in_chans, mapping, partial)
    if extra == "adapt":
        plan = adapt_extra(plan, backbone, data)
    if tell:
        tell_notes(plan)
    return plan


def tell_notes(plan: BandPlan) -> None:
    """Tell the user a plan's notes (one ``note:`` line each on the command line)."""
    for text in plan.notes:
        note(text)

"""Stand-in of ComfyUI's ``comfy_api/latest/_io.py`` (v0.33.0, commit 783545f6), the part the
DLGSANet nodes use: the input/output types, ``Schema``, ``ComfyNode`` and ``NodeOutput``.

Signatures (argument names, order, defaults) mirror the real file; the bodies are our own,
reduced to what ComfyUI does with a schema: ``INPUT_TYPES``/``GET_NODE_INFO_V1`` (what
``/object_info`` and prompt validation read), the V1 class attributes derived from the schema,
``EXECUTE_NORMALIZED`` and ``PREPARE_CLASS_CLONE`` (what ``execution.py`` calls). Types and
features the nodes do not use (dynamic inputs, hidden inputs, price badges...) are left out.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

import torch


def prune_dict(d: dict) -> dict:  # comfy_api/internal/__init__.py
    return {k: v for k, v in d.items() if v is not None}


class classproperty:  # comfy_api/internal/__init__.py
    def __init__(self, f: Callable) -> None:
        self.f = f

    def __get__(self, obj: Any, owner: type) -> Any:
        return self.f(owner)


class NumberDisplay(str, Enum):
    number = "number"
    slider = "slider"


class _ComfyType(ABC):
    Type = Any
    io_type: str = None


def comfytype(io_type: str, **kwargs: Any) -> Callable[[type], type]:
    """Binds ``io_type`` to the class and gives it its own Input/Output classes."""
    def decorator(cls: type) -> type:
        cls.io_type = io_type
        for name in ("Input", "Output"):
            inner = getattr(cls, name, None)
            if inner is not None:
                inner = type(inner.__name__, (inner,), {})  # own copy, as copy_class does
                inner.Parent = cls
                setattr(cls, name, inner)
        return cls
    return decorator


def Custom(io_type: str) -> type[ComfyTypeIO]:
    @comfytype(io_type=io_type)
    class CustomComfyType(ComfyTypeIO):
        ...
    return CustomComfyType


class _IO_V3:
    Parent: _ComfyType = None

    def __init__(self) -> None:
        pass

    def validate(self) -> None:
        pass

    @property
    def io_type(self) -> str:
        return self.Parent.io_type


class Input(_IO_V3):
    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                 extra_dict=None, raw_link: bool = None, advanced: bool = None):
        super().__init__()
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.extra_dict = extra_dict if extra_dict is not None else {}
        self.rawLink = raw_link
        self.advanced = advanced

    def as_dict(self) -> dict:
        return prune_dict({"display_name": self.display_name, "optional": self.optional,
                           "tooltip": self.tooltip, "lazy": self.lazy, "rawLink": self.rawLink,
                           "advanced": self.advanced}) | prune_dict(self.extra_dict)

    def get_io_type(self) -> str:
        return self.io_type

    def get_all(self) -> list[Input]:
        return [self]


class WidgetInput(Input):
    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                 default: Any = None,
                 socketless: bool = None, widget_type: str = None, force_input: bool = None, extra_dict=None,
                 raw_link: bool = None, advanced: bool = None):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link, advanced)
        self.default = default
        self.socketless = socketless
        self.widget_type = widget_type
        self.force_input = force_input

    def as_dict(self) -> dict:
        return super().as_dict() | prune_dict({"default": self.default, "socketless": self.socketless,
                                               "widgetType": self.widget_type, "forceInput": self.force_input})


class Output(_IO_V3):
    def __init__(self, id: str = None, display_name: str = None, tooltip: str = None,
                 is_output_list=False):
        self.id = id
        self.display_name = display_name if display_name else id
        self.tooltip = tooltip
        self.is_output_list = is_output_list


class ComfyTypeI(_ComfyType):
    class Input(Input):
        ...


class ComfyTypeIO(ComfyTypeI):
    class Output(Output):
        ...


@comfytype(io_type="INT")
class Int(ComfyTypeIO):
    Type = int

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                     default: int = None, min: int = None, max: int = None, step: int = None,
                     control_after_generate=None, display_mode: NumberDisplay = None, socketless: bool = None,
                     force_input: bool = None, extra_dict=None, raw_link: bool = None, advanced: bool = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link, advanced)
            self.min, self.max, self.step = min, max, step
            self.control_after_generate = control_after_generate
            self.display_mode = display_mode

        def as_dict(self) -> dict:
            return super().as_dict() | prune_dict({
                "min": self.min, "max": self.max, "step": self.step,
                "control_after_generate": self.control_after_generate,
                "display": self.display_mode.value if self.display_mode else None})


@comfytype(io_type="FLOAT")
class Float(ComfyTypeIO):
    Type = float

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                     default: float = None, min: float = None, max: float = None, step: float = None,
                     round: float = None, display_mode: NumberDisplay = None, gradient_stops: list = None,
                     socketless: bool = None, force_input: bool = None, extra_dict=None, raw_link: bool = None,
                     advanced: bool = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link, advanced)
            self.min, self.max, self.step, self.round = min, max, step, round
            self.display_mode = display_mode
            self.gradient_stops = gradient_stops

        def as_dict(self) -> dict:
            return super().as_dict() | prune_dict({
                "min": self.min, "max": self.max, "step": self.step, "round": self.round,
                "display": self.display_mode, "gradient_stops": self.gradient_stops})


@comfytype(io_type="COMBO")
class Combo(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        def __init__(self, id: str, options: list = None, display_name: str = None, optional=False,
                     tooltip: str = None, lazy: bool = None, default: Any = None, control_after_generate=None,
                     upload=None, image_folder=None, remote=None, socketless: bool = None, extra_dict=None,
                     raw_link: bool = None, advanced: bool = None):
            if isinstance(options, type) and issubclass(options, Enum):
                options = [v.value for v in options]
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, None,
                             extra_dict, raw_link, advanced)
            self.multiselect = False
            self.options = options
            self.control_after_generate = control_after_generate
            self.upload, self.image_folder, self.remote = upload, image_folder, remote

        def as_dict(self) -> dict:
            return super().as_dict() | prune_dict({
                "multiselect": self.multiselect, "options": self.options,
                "control_after_generate": self.control_after_generate})


@comfytype(io_type="IMAGE")
class Image(ComfyTypeIO):
    Type = torch.Tensor


@comfytype(io_type="UPSCALE_MODEL")
class UpscaleModel(ComfyTypeIO):
    pass


@dataclass
class Schema:
    node_id: str
    display_name: str = None
    category: str = "sd"
    inputs: list[Input] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    hidden: list = field(default_factory=list)
    description: str = ""
    search_aliases: list[str] = field(default_factory=list)
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_dev_only: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False
    accept_all_inputs: bool = False

    def validate(self) -> None:
        """Input and output ids must be unique (as the real ``Schema.validate``)."""
        for kind, ids in (("Input", [i.id for i in self.inputs]), ("Output", [o.id for o in self.outputs])):
            dupes = [k for k, n in Counter(ids).items() if n > 1]
            if dupes:
                raise ValueError(f"{kind} ids must be unique, but {dupes} are not.")
        for io in [*self.inputs, *self.outputs]:
            io.validate()

    def finalize(self) -> None:
        for i, output in enumerate(self.outputs):
            if output.id is None:
                output.id = f"_{i}_{output.io_type}_"

    def get_v1_info(self, cls: type) -> dict:
        """The node as ``/object_info`` describes it (the real method returns a NodeInfoV1)."""
        inputs: dict[str, dict] = {"required": {}}
        for i in self.inputs:
            options = i.as_dict()
            options.pop("optional", None)
            inputs.setdefault("optional" if i.optional else "required", {})[i.id] = (i.get_io_type(), options)
        return dict(
            input=inputs, input_order={k: list(v) for k, v in inputs.items()},
            is_input_list=self.is_input_list,
            output=[o.io_type for o in self.outputs],
            output_is_list=[o.is_output_list for o in self.outputs],
            output_name=[o.display_name if o.display_name else o.io_type for o in self.outputs],
            output_tooltips=[o.tooltip if o.tooltip else None for o in self.outputs],
            name=self.node_id, display_name=self.display_name, category=self.category,
            description=self.description, output_node=self.is_output_node,
            deprecated=self.is_deprecated, experimental=self.is_experimental,
            python_module=getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes"))


class ComfyNode:
    """Base of V3 nodes: subclasses define ``define_schema`` and ``execute`` (classmethods)."""

    RELATIVE_PYTHON_MODULE = None
    SCHEMA = None
    hidden = None

    @classmethod
    @abstractmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    @abstractmethod
    def execute(cls, **kwargs) -> NodeOutput:
        raise NotImplementedError

    @classmethod
    def validate_inputs(cls, **kwargs) -> bool | str:
        raise NotImplementedError

    @classmethod
    def fingerprint_inputs(cls, **kwargs) -> Any:
        raise NotImplementedError

    @classmethod
    def check_lazy_status(cls, **kwargs) -> list[str]:
        return [name for name in kwargs if kwargs[name] is None]

    @classmethod
    def VALIDATE_CLASS(cls) -> None:
        for name in ("define_schema", "execute"):
            if getattr(cls, name).__func__ is getattr(ComfyNode, name).__func__:
                raise Exception(f"No {name} function was defined for node class {cls.__name__}.")

    @classmethod
    def FINALIZE_SCHEMA(cls) -> Schema:
        schema = cls.define_schema()
        schema.finalize()
        return schema

    @classmethod
    def GET_SCHEMA(cls) -> Schema:
        cls.VALIDATE_CLASS()
        schema = cls.FINALIZE_SCHEMA()
        schema.validate()
        cls.SCHEMA = schema
        return schema

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, dict]:
        return cls.FINALIZE_SCHEMA().get_v1_info(cls)["input"]

    @classmethod
    def GET_NODE_INFO_V1(cls) -> dict[str, Any]:
        return cls.GET_SCHEMA().get_v1_info(cls)

    @classproperty
    def FUNCTION(cls) -> str:  # noqa: N802
        import inspect
        return "EXECUTE_NORMALIZED_ASYNC" if inspect.iscoroutinefunction(cls.execute) else "EXECUTE_NORMALIZED"

    @classproperty
    def CATEGORY(cls) -> str:  # noqa: N802
        return cls.GET_SCHEMA().category

    @classproperty
    def DESCRIPTION(cls) -> str:  # noqa: N802
        return cls.GET_SCHEMA().description

    @classproperty
    def RETURN_TYPES(cls) -> list[str]:  # noqa: N802
        return cls.GET_NODE_INFO_V1()["output"]

    @classproperty
    def RETURN_NAMES(cls) -> list[str]:  # noqa: N802
        return cls.GET_NODE_INFO_V1()["output_name"]

    @classproperty
    def OUTPUT_TOOLTIPS(cls) -> list:  # noqa: N802
        return cls.GET_NODE_INFO_V1()["output_tooltips"]

    @classmethod
    def EXECUTE_NORMALIZED(cls, *args: Any, **kwargs: Any) -> NodeOutput:
        result = cls.execute(*args, **kwargs)
        if result is None:
            return NodeOutput()
        if isinstance(result, tuple):
            return NodeOutput(*result)
        if not isinstance(result, NodeOutput):
            raise Exception(f"Invalid return type from node: {type(result)}")
        return result

    @classmethod
    def PREPARE_CLASS_CLONE(cls, v3_data: Any) -> type[ComfyNode]:
        """A shallow clone of the class per run (nodes keep no state on their class)."""
        return type(f"{cls.__name__}Clone", (cls,) + cls.__bases__, dict(cls.__dict__))


class NodeOutput:
    def __init__(self, *args: Any, ui: Any = None, expand: dict = None, block_execution: str = None):
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self) -> Any:
        return self.args if len(self.args) > 0 else None

    def __getitem__(self, index: int) -> Any:
        return self.args[index]


__all__ = ["Custom", "Input", "WidgetInput", "Output", "ComfyTypeI", "ComfyTypeIO", "Int", "Float", "Combo",
           "Image", "UpscaleModel", "Schema", "ComfyNode", "NodeOutput", "NumberDisplay", "comfytype"]

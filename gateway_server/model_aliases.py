"""Which model id each provider gets: aliases, a provider's own ids, else its default model."""

from __future__ import annotations

from collections.abc import Mapping


class ModelResolver:
    """Built once from the configuration; ``resolve`` is a couple of dict look-ups per attempt."""

    def __init__(self, aliases: Mapping[str, Mapping[str, str]]) -> None:
        self._aliases = {alias: dict(mapping) for alias, mapping in aliases.items()}
        # A concrete id of one provider -> the alias it belongs to, to translate it for the next.
        self._alias_of_id: dict[str, str] = {}
        for alias, mapping in self._aliases.items():
            for model_id in mapping.values():
                self._alias_of_id.setdefault(model_id, alias)

    def knows(self, model: str) -> bool:
        """An alias, or a model id some alias maps to."""
        return model in self._aliases or model in self._alias_of_id

    def resolve(self, requested: str, provider: str, *, default_model: str, provider_models: tuple[str, ...],
                first: bool, substitute_default: bool = False) -> str | None:
        """The model id to send to ``provider`` for a request that asked for ``requested``.

        - nothing requested: the provider's default model;
        - an alias: the alias's id for this provider;
        - an id the provider lists: as asked;
        - an id of an alias (another provider's id, say): translated through that alias;
        - any other id: as asked on the provider the request chose (it decides);
        - otherwise (no id for this provider): None, the model is unavailable there, unless
          ``substitute_default`` allows answering with the provider's default model.
        """
        if not requested:
            return default_model
        fallback = default_model if substitute_default else None
        mapping = self._aliases.get(requested)
        if mapping is not None:
            return mapping.get(provider, fallback)
        if requested in provider_models:
            return requested
        alias = self._alias_of_id.get(requested)
        if alias is not None:
            return self._aliases[alias].get(provider, fallback)
        return requested if first else fallback

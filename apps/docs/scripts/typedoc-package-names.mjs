// TypeDoc plugin: name each module after the package it documents ("@moa/core") instead of the
// path TypeDoc derives from the entry point ("core/src").
import { Converter, ReflectionKind } from "typedoc";

/** @param {import("typedoc").Application} app */
export function load(app) {
  app.converter.on(Converter.EVENT_RESOLVE_BEGIN, (context) => {
    for (const module of context.project.getReflectionsByKind(ReflectionKind.Module)) {
      const match = /^(?:packages\/)?([a-z0-9-]+)\/src(?:\/index)?$/.exec(module.name);
      if (match) module.name = `@moa/${match[1]}`;
    }
  });
}

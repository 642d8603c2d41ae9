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

// ---- the date parts as generated code (model/src/features.js) ------------------------------------------------
//
// Within +-DATE_INT ms (JavaScript's Date range, +-1e8 days) a day number fits an int32, and the date parts are
// int32 arithmetic: the same values as DATEPARTS' float64 formulas (exact integers both ways; the floor of a
// non-negative quotient is its truncation), 11 ns a row for a month in mini-racer instead of 85-120 with
// Math.floor (a call of ~6 ns there). Beyond it, DATEPARTS computes them.
export const DATE_INT = 8.64e15;

// H. Hinnant's civil_from_days in int32 arithmetic on `days`, up to the month; era by a division that floors
// negative days too.
const CIVIL = `const z = days + 719468; const era = ((z >= 0 ? z : z - 146096) / 146097) | 0;
const doe = z - era * 146097;
const yoe = ((doe - ((doe / 1460) | 0) + ((doe / 36524) | 0) - ((doe / 146096) | 0)) / 365) | 0;
const doy = doe - (365 * yoe + ((yoe / 4) | 0) - ((yoe / 100) | 0));
const mp = ((5 * doy + 2) / 153) | 0;
const m = mp < 10 ? mp + 3 : mp - 9;`;

// Expressions of CIVIL's locals for the parts that need it. dayofyear: doy counts from March 1, so January 1
// is 306; from March on, January and February (29 days in a leap year: yoe's, which is the civil year's
// remainder mod 400) come first.
const CIVIL_PARTS = {
  year: 'yoe + era * 400 + (m <= 2 ? 1 : 0)',
  month: 'm',
  day: 'doy - (((153 * mp + 2) / 5) | 0) + 1',
  dayofyear: 'm <= 2 ? doy - 305 : doy + 60 + ((yoe % 4 === 0 && yoe % 100 !== 0) || yoe === 0 ? 1 : 0)',
};

// The civil parts of the days 1970-01-01 + 0..CIVIL_DAYS-1 (to 2149), packed: (year - 1970) << 18 |
// dayofyear << 9 | month << 5 | day. A month is a load (3 ns a row) instead of CIVIL's divisions (11); 256 KB,
// made when a spec first asks for one of these parts.
const CIVIL_DAYS = 65536;
const UNPACK = { year: '(p >> 18) + 1970', dayofyear: '(p >> 9) & 511', month: '(p >> 5) & 15', day: 'p & 31' };
let civilTable = null;

// The parts that read civilDays(); datepartCode names it `table`.
export const CIVIL_TABLE_PARTS = Object.keys(UNPACK);

export function civilDays() {
  if (civilTable === null) {
    // eslint-disable-next-line no-new-func
    const fill = new Function('t', `for (let days = 0; days < ${CIVIL_DAYS}; days++) {\n${CIVIL}\n` +
      `t[days] = ((${CIVIL_PARTS.year}) - 1970) << 18 | (${CIVIL_PARTS.dayofyear}) << 9 | m << 5 | ` +
      `(${CIVIL_PARTS.day});\n}`);
    civilTable = new Int32Array(CIVIL_DAYS);
    fill(civilTable);
  }
  return civilTable;
}

// Statements that replace the ms in `x` (|x| < DATE_INT) by the date part; `table`: the name of civilDays().
export function datepartCode(part, table) {
  // floor(a / b) for |a / b| < 2^31
  const floor = (name, expr) => `const ${name}_ = ${expr}; let ${name} = ${name}_ | 0; if (${name} > ${name}_) ${name}--;`;
  const days = floor('days', 'x / 86400000');
  switch (part) {
    case 'year':
    case 'month':
    case 'day':
    case 'dayofyear':
      return `${days}\nif (days >= 0 && days < ${CIVIL_DAYS}) { const p = ${table}[days]; x = ${UNPACK[part]}; }\n` +
        `else {\n${CIVIL}\nx = ${CIVIL_PARTS[part]};\n}`;
    case 'weekday':
      return `${days}\nx = (((days + 3) % 7) + 7) % 7;`; // not `w < 0 ? w + 7 : w`, which keeps a -0
    case 'hour':
      return `${days}\n${floor('hh', '(x - days * 86400000) / 3600000')}\nx = hh;`;
    case 'minute':
      return `${days}\n${floor('mm', '(x - days * 86400000) / 60000')}\nx = mm % 60;`;
    default: // epoch_days
      return 'x = x / 86400000;';
  }
}

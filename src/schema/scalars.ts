import { GraphQLJSONObject } from 'graphql-scalars';
import { GraphQLISODateTime } from 'type-graphql';

/** ISO-8601 date-times; graphql-scalars rejects impossible dates such as 2020-02-30. */
export const DateTimeISO = GraphQLISODateTime;
export const JSONObject = GraphQLJSONObject;
